"""``transfer-learning``: start from a model of another task, fine-tune on the victim's answers.

WRT ``wrt/attacks/removal/transfer_learning.py`` with ``configs/cifar10/attack_configs/
transfer_learning.yaml`` (Lukas et al., S&P 2022): an ImageNet-pretrained ResNet-34 loses its
``fc`` layer, gains a new head for the victim's classes, and every layer is fine-tuned
(``freeze: False``) on the victim's answers to the attacker's data, SGD at lr 0.001 with
momentum 0.9, weight decay 1e-4, batch 64 (our defaults; WRT's step schedule at epochs 3 and 4
of 5 is left to ``--schedule step``, cosine by default). The victim's weights are never read:
it is only asked (:func:`engine.attacks.stealing.ask_within_budget`).

The starting model is ``--pretrained RUN``, a run folder whose model was trained on another
task (another dataset, or other classes); it must take the suspect's input shape, since our
small classifiers have no resize stage in front (WRT's upsampling to 224 pixels), and a run
of the suspect's own dataset and classes is refused. Without ``--pretrained`` the attack
pretrains its starting model itself, ``--pretrain-epochs`` on ``--pretrain-size`` labelled
images of ``--pretrain DATASET`` (default ``synthetic``, the rendered digits every machine
has, looked up in the default data folder), converted to the suspect's input shape: the
simplest honest stand-in for a public pretrained model, refused when it is the suspect's own
dataset. Either way the head (our classifiers' last linear layer) is replaced by a fresh,
seeded one and the rest starts from the pretrained weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData, fit_images
from engine.attacks.common import last_layer
from engine.attacks.registry import EXTRACTION, Attack, AttackEnv, AttackResult, register_attack
from engine.attacks.stealing import ExtractionParams, ask_transfer_set, fresh_model
from engine.data import DATASETS, default_data_dir, load_dataset, require_dataset
from engine.data.meta import DatasetMeta, dataset_meta
from engine.deploy import unwrap
from engine.errors import ConfigError, RunError
from engine.models import Architecture, build_model, check_model_name
from engine.registry import param
from engine.runs import RunDir, load_architecture, load_model
from engine.training import Source


@dataclasses.dataclass(frozen=True)
class TransferParams(ExtractionParams):
    pretrained: str = param(
        "", "run folder of a model trained on another task (empty: pretrain on --pretrain)"
    )
    pretrain: str = param(
        "synthetic", "dataset the attack pretrains its starting model on without --pretrained"
    )
    pretrain_size: int = param(10_000, "labelled images of --pretrain used", low=1)
    pretrain_epochs: int = param(2, "passes over them", low=1, high=1000)
    pretrain_lr: float = param(
        0.01, "learning rate of that pretraining", low=0.0, high=100.0, low_open=True
    )
    student: str = param("", "architecture pretrained without --pretrained (empty: the suspect's)")
    lr: float = param(0.001, "initial learning rate", low=0.0, high=100.0, low_open=True)
    weight_decay: float = param(1e-4, "L2 weight decay", low=0.0, high=1.0)


def run_dataset_of(run: RunDir) -> str:
    """The dataset a run's model was trained on, as its manifest (or, for ``auto``, its
    summary) says; empty when neither does."""
    name = str(run.manifest()["config"].get("dataset", "") or "")
    if name in ("", "auto"):
        try:
            name = str(run.summary().get("dataset") or "")
        except (RunError, AttributeError):
            name = ""
    return name


def head_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of ``model``'s output layer, which transfer learning replaces."""
    head = last_layer(model)
    prefix = next(name for name, module in model.named_modules() if module is head)
    return {f"{prefix}.{key}" for key in head.state_dict()}


def with_new_head(pretrained: nn.Module, arch: Architecture, seed: int) -> nn.Module:
    """A model of ``arch`` (the suspect's classes) holding ``pretrained``'s weights except
    the output layer, which is fresh from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch)
    fresh = head_keys(model)
    state = {k: v for k, v in unwrap(pretrained).state_dict().items() if k not in fresh}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"the pretrained model does not fit {arch.name}: {first}") from None
    if set(missing) - fresh or unexpected:
        raise ConfigError(
            f"the pretrained model does not fit {arch.name}: "
            f"{len(set(missing) - fresh)} missing and {len(unexpected)} unexpected weights"
        )
    return model


@register_attack("transfer-learning", TransferParams, family=EXTRACTION)
class TransferLearning(Attack[TransferParams]):
    """A model of another task, its head replaced, fine-tuned on the suspect's answers."""

    def __init__(self, params: TransferParams) -> None:
        super().__init__(params)
        if params.student:
            check_model_name(params.student)
        if not params.pretrained:
            DATASETS.get(params.pretrain)

    def check_budget(self, budget: AttackerBudget) -> None:
        if budget.data_fraction == 0 and not budget.unlabeled:
            raise ConfigError(
                "transfer-learning fine-tunes on the suspect's answers to the attacker's "
                "images: give --data-fraction > 0 or --unlabeled SOURCE"
            )

    def check_data(self, data: DatasetMeta, budget: AttackerBudget, given: object = None) -> None:
        p = self.params
        if p.pretrained:
            self.check_pretrained_run(Path(p.pretrained), data)
            return
        if p.pretrain == data.name:
            raise ConfigError(
                f"--pretrain {p.pretrain} is the suspect's own dataset: transfer learning "
                "starts from another task; give --pretrain DATASET or --pretrained RUN"
            )
        require_dataset(p.pretrain, default_data_dir())  # the run reads it from there
        other = dataset_meta(p.pretrain, train_size=p.pretrain_size)
        if other.shape[0] != data.shape[0] and not {other.shape[0], data.shape[0]} <= {1, 3}:
            raise ConfigError(
                f"--pretrain {p.pretrain}: its {other.shape[0]}-channel images cannot be "
                f"given to a model of {data.shape[0]}-channel images"
            )

    def check_pretrained_run(self, folder: Path, data: DatasetMeta) -> None:
        try:
            run = RunDir.open(folder)
            arch = load_architecture(run.path)
        except RunError as exc:
            raise ConfigError(f"--pretrained {folder}: {exc}") from None
        if tuple(arch.in_shape) != tuple(data.shape):
            shape = "x".join(str(v) for v in arch.in_shape)
            wanted = "x".join(str(v) for v in data.shape)
            raise ConfigError(
                f"--pretrained {folder}: its model takes {shape} images, the suspect "
                f"{wanted}; transfer learning here needs the same input shape"
            )
        if run_dataset_of(run) == data.name and arch.num_classes == data.classes:
            raise ConfigError(
                f"--pretrained {folder} was trained on {data.name}, the suspect's own task: "
                "give a run of another dataset or other classes"
            )

    def pretrain_steps(self, n_images: int) -> int:
        return self.params.pretrain_epochs * max(1, -(-n_images // self.params.batch))

    def planned_steps(self, data: AttackerData) -> int:
        pool = len(data.unlabeled_x) if data.has_unlabeled else len(data.labeled_x)
        tune = data.total_steps(pool, self.params.batch)
        if self.params.pretrained:
            return tune
        return tune + self.pretrain_steps(self.params.pretrain_size)

    def starting_model(
        self, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> tuple[nn.Module, Architecture, int]:
        """The pretrained model, its architecture, and the steps spent pretraining it."""
        p = self.params
        if p.pretrained:
            model, pre_arch = load_model(Path(p.pretrained), env.device)
            env.log(f"transfer-learning: starting from {pre_arch.name} of {p.pretrained}")
            return unwrap(model), pre_arch, 0
        other = load_dataset(
            p.pretrain, None, device=env.device, train_size=p.pretrain_size, test_size=1
        ).data
        x = fit_images(other.train_x[: p.pretrain_size], data.shape)
        y = other.train_y[: p.pretrain_size]
        base = Architecture(p.student or arch.name, arch.in_shape, other.num_classes)
        model, pre_arch = fresh_model(base, "", data.seed + 1, env.device)
        env.log(
            f"transfer-learning: pretraining {pre_arch.name} on {len(x)} images of "
            f"{p.pretrain} ({other.num_classes} classes)"
        )
        settings = dataclasses.replace(p, lr=p.pretrain_lr, weight_decay=5e-4).settings()
        report = env.train(
            model,
            [Source("pretrain", x, p.batch, y=y)],
            settings,
            steps=self.pretrain_steps(len(x)),
        )
        return model, pre_arch, report.steps

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        before = env.queries.count  # a chain's earlier steps share the counter
        x, y = ask_transfer_set(model, data, env)
        pretrained, pre_arch, pre_steps = self.starting_model(arch, data, env)
        student_arch = Architecture(pre_arch.name, arch.in_shape, arch.num_classes)
        student = with_new_head(pretrained, student_arch, data.seed).to(env.device)
        report = env.train(
            student,
            [Source("transfer", x, p.batch, y=y)],
            p.settings(),
            steps=data.total_steps(len(x), p.batch),
        )
        info = {
            "student": student_arch.name,
            "pretrained": p.pretrained or f"{p.pretrain} ({pre_arch.num_classes} classes)",
            "pretrain_steps": pre_steps,
            "queries": env.queries.count - before,
            "answers": data.budget.answers,
            "rounds": 1,
            "answered": len(x),
            "loss": report.loss,
        }
        return AttackResult(student, student_arch, pre_steps + report.steps, info)
