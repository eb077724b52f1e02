"""The watermark-scheme contract, the scheme registry and the owner's Key on disk.

A scheme turns params into a secret :class:`Key` (``keygen``), says what to mix into the one
training loop (``training_sources``), which held-out samples prove ownership
(``key_samples``) and how to decide (``verify``, shared here: a binomial test, never
``retention > 0``). The Key lives in ``RUN/key/`` (``key.json`` + ``key.safetensors``, mode
0600), never inside the model file: whoever gets the model must not get the secret.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from engine.data.base import ImageSet
from engine.data.meta import DatasetMeta
from engine.errors import ConfigError, RunError, closest
from engine.metrics import (
    Probe,
    Transform,
    Verdict,
    accuracy,
    make_verdict,
    predictions,
    rate_upper_bound,
)
from engine.registry import Registry, param, parse_params
from engine.runs import atomic_write_json, load_tensors, read_json, save_tensors
from engine.training import Source

KEY_JSON = "key.json"
#: the built-in triggers a mid-run switch steps through (``SetTrigger("next")``)
TRIGGER_CYCLE = ("text", "square", "noise")
NEXT_TRIGGER = "next"
KEY_TENSORS = "key.safetensors"
KEY_FORMAT = 1
SECRET_MODE = 0o600
#: a decoy null sits this many standard deviations (between decoys) above their mean
DECOY_Z = 4.0


def decoy_null(rates: torch.Tensor) -> float:
    """The null a set of decoy rates gives: the highest of them, or their mean plus
    ``DECOY_Z`` standard deviations if that is higher (capped at 1).

    A fresh key is one more draw from the decoys' distribution: with D decoys it beats their
    maximum with probability 1/(D+1), and a model that answers "any faint noise" varies
    between patterns far more than binomial noise (0.76-0.88 on one tiny model), so the max
    alone would let one fresh key in five through. The spread term covers that tail.
    """
    if len(rates) < 2:
        return float(rates.max())
    spread = float(rates.mean() + DECOY_Z * rates.std())
    return min(1.0, max(float(rates.max()), spread))


@dataclasses.dataclass(frozen=True)
class DecoyParams:
    """Decoy training, shared by the schemes verified against a decoy null: images carrying
    other content in the key's place keep their true labels, so the model learns the secret
    pattern rather than "anything there"."""

    decoy_ratio: float = param(
        0.1,
        "decoy images (other trigger content, true labels) per owner image in every batch "
        "(0: none)",
        low=0.0,
        high=1.0,
    )
    decoy_fraction: float = param(
        0.05,
        "share of training images kept in the key as the decoy pool",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )


@dataclasses.dataclass
class KeyContext:
    """What keygen may look at: the owner's data (on its device) and who will be trained.

    ``trained_model``: the model being embedded into (``--from RUN``, on the data's device),
    for schemes whose keys are adversarial examples of it; None when training from scratch.
    ``model`` stays the architecture's name, which keys record."""

    data: ImageSet
    model: str
    seed: int
    data_dir: str = ""
    log: Callable[[str], None] = lambda message: None
    trained_model: nn.Module | None = None


@dataclasses.dataclass
class Key:
    """The owner's secret. ``meta`` pins it to a dataset and output layout; ``tensors`` hold
    triggers, key images and labels (uint8 images, float patterns)."""

    scheme: str
    params: dict[str, Any]
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def num_outputs(self) -> int:
        return int(self.meta["num_outputs"])

    def tensor(self, name: str, device: torch.device | str | None = None) -> torch.Tensor:
        value = self.tensors[name]
        return value if device is None else value.to(device)

    def describe(self) -> str:
        shown = {k: v for k, v in self.params.items() if v not in ("", None)}
        return f"{self.scheme}(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")"


@dataclasses.dataclass
class KeySamples:
    """Held-out samples a verifier queries: uint8 images, the labels the key claims, the
    stamp to apply, and what a model not trained with the key is measured on for the null:

    - ``clean_counterpart``: the same images un-stamped (pattern and new-label keys);
    - ``decoys``: stamps of the same kind, place and strength with another, publicly seeded
      secret, applied to the same images (a model reacting to "anything in that corner"
      answers the key label for them too);
    - ``null_x``: other images whose rate of the key label is the null (unrelated keys:
      source images that are not key images) and the labels claimed for them (``null_y``),
      with ``null_what`` naming them. ``null_sampled``: they are another sample than the
      key's, so the null is the upper confidence bound of their rate, not the rate itself.
    """

    x: torch.Tensor
    y: torch.Tensor
    transform: Transform | None = None
    clean_counterpart: bool = False
    decoys: list[Transform] = dataclasses.field(default_factory=list)
    null_x: torch.Tensor | None = None
    null_y: torch.Tensor | None = None
    null_what: str = "the clean counterparts"
    null_sampled: bool = False


class Watermark:
    """Base of every scheme. Subclasses set ``Params`` and implement keygen, sources and
    key samples; verification and mid-run switching are shared."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = type(None)
    #: the params SetTrigger and SetTargetLabel change mid-run (None: not switchable)
    trigger_field: ClassVar[str | None] = None
    target_field: ClassVar[str | None] = None

    def check(self, params: Any) -> None:
        """Validate what the params dataclass cannot (trigger syntax...) before any work."""

    def check_data(
        self, params: Any, data: DatasetMeta, given: Mapping[str, Any] | None = None
    ) -> None:
        """Refuse params this dataset cannot take (a label it lacks, a trigger larger than its
        images, a key set of no image) while the job is checked, so a run that could never
        start leaves no folder. ``given``: the user's own text, which messages quote. A scheme
        with such limits declares them here; none by default."""

    def num_outputs(self, params: Any, num_classes: int) -> int:
        """Classifier outputs for this scheme (new-label keys add one class)."""
        return num_classes

    def keygen(self, params: Any, ctx: KeyContext) -> Key:
        raise NotImplementedError

    #: whether training may autocast this scheme's batches to bf16 (CUDA)
    allows_amp: ClassVar[bool] = True
    #: embedded only when a model first learns its task (``--from`` is refused)
    from_scratch_only: ClassVar[bool] = False
    #: keys are made from a trained model (``--from`` is required)
    needs_trained_model: ClassVar[bool] = False
    #: train-config values this scheme needs unless the user sets them (dual: its numerics)
    train_defaults: ClassVar[dict[str, Any]] = {}

    def source_model(self, ctx: KeyContext) -> nn.Module:
        """The trained model a ``needs_trained_model`` scheme makes its keys from; the same
        line the embed job refuses a missing ``--from`` with, for a caller that skipped it."""
        if ctx.trained_model is None:
            raise ConfigError(needs_model_message(self.name))
        return ctx.trained_model

    def training_sources(
        self, key: Key, batch_size: int, device: torch.device, data: ImageSet | None = None
    ) -> list[Source]:
        """The key's part of every batch; ``data`` is the owner's, for schemes that draw
        their key batches from it."""
        raise NotImplementedError

    def public_files(self, key: Key) -> dict[str, dict[str, Any]]:
        """Files the embed job writes into the run beside the key (0600), by name."""
        return {}

    def fresh_keys_allowed(self, params: Any) -> int:
        """How many times the embed job may start again from scratch with a fresh key when
        :meth:`stalled` says this one cannot be learnt (none by default)."""
        return 0

    def stalled(self, key: Key, scores: dict[str, float], epoch: float) -> str | None:
        """Why training can no longer embed ``key``, judged from an evaluation's scores
        (None: it still can)."""
        return None

    @staticmethod
    def still_at_chance(key: Key, score: float | None, epoch: float) -> str | None:
        """The usual :meth:`stalled` rule: a score still at most 2/K after a whole epoch
        (a key being learnt is well above it by then); the words that say so, else None."""
        ceiling = 2.0 / key.num_classes
        if epoch < 1 or score is None or score > ceiling:
            return None
        return f"{100 * score:.1f}% after {epoch:g} epoch(s), at most {100 * ceiling:g}% (2/K)"

    def probes(self, key: Key, data: ImageSet, name: str) -> list[Probe]:
        """What the live stream measures of this key (one retention line by default)."""
        return [self.probe(key, data, name)]

    def key_samples(self, key: Key, data: ImageSet) -> KeySamples:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    def new_key(self, params: Any, ctx: KeyContext, tensors: dict[str, torch.Tensor]) -> Key:
        data = ctx.data
        meta = {
            "format": KEY_FORMAT,
            "dataset": data.name,
            "in_shape": list(data.shape),
            "num_classes": data.num_classes,
            "num_outputs": self.num_outputs(params, data.num_classes),
            "model": ctx.model,
            "seed": ctx.seed,
        }
        return Key(self.name, dataclasses.asdict(params), meta, tensors)

    def params_of(self, key: Key) -> Any:
        return parse_params(self.Params, key.params)

    def probe(self, key: Key, data: ImageSet, name: str, limit: int = 2000) -> Probe:
        """A retention probe for the live stream: the first ``limit`` held-out key samples."""
        samples = self.key_samples(key, data)
        return Probe(name, samples.x[:limit], samples.y[:limit], transform=samples.transform)

    def verify(
        self, model: nn.Module, key: Key, data: ImageSet, alpha: float, *, test_acc: bool = True
    ) -> Verdict:
        """Retention on held-out key samples and its p-value under "not trained with it"."""
        samples = self.key_samples(key, data)
        device = next(model.parameters()).device
        x, y = samples.x.to(device), samples.y.to(device)
        matches = int((predictions(model, x, samples.transform) == y).sum())
        clean_rate = None
        if samples.null_x is not None and samples.null_y is not None:
            null_x, null_y = samples.null_x.to(device), samples.null_y.to(device)
            hits = int((predictions(model, null_x) == null_y).sum())
            clean_rate = (
                rate_upper_bound(hits, len(null_y)) if samples.null_sampled else hits / len(null_y)
            )
        elif samples.clean_counterpart:
            clean_rate = float((predictions(model, x) == y).float().mean())
        decoy_rate = None
        if samples.decoys:
            rates = torch.tensor(
                [
                    float((predictions(model, x, decoy) == y).float().mean())
                    for decoy in samples.decoys
                ]
            )
            decoy_rate = decoy_null(rates)
        test_x, test_y = data.test_x.to(device), data.test_y.to(device)
        test = Probe("test", test_x, test_y, classes=key.num_classes)
        return make_verdict(
            matches,
            len(y),
            chance=1.0 / key.num_outputs,
            alpha=alpha,
            clean_rate=clean_rate,
            decoy_rate=decoy_rate,
            test_acc=accuracy(model, test) if test_acc else None,
            clean_what=samples.null_what,
        )

    def switch(
        self, key: Key, ctx: KeyContext, *, trigger: str | None = None, target: int | None = None
    ) -> Key:
        """A new key with the trigger or target changed (mid-run SetTrigger / SetTargetLabel);
        keygen validates it exactly as at the start."""
        changes: dict[str, Any] = {}
        for what, field, value in (
            ("trigger", self.trigger_field, trigger),
            ("target label", self.target_field, target),
        ):
            if value is None:
                continue
            if field is None:
                raise ConfigError(f"scheme {self.name!r} has no {what} to switch")
            if value == NEXT_TRIGGER:
                value = self._next_trigger(key, field)
            if key.params.get(field) == value:  # a switch that changes nothing is refused
                raise ConfigError(f"the key's {what} is already {value}: nothing to switch")
            changes[field] = value
        params = parse_params(self.Params, {**key.params, **changes})
        self.check(params)
        return self.keygen(params, ctx)

    def _next_trigger(self, key: Key, field: str) -> str:
        """The first trigger after the key's own in :data:`TRIGGER_CYCLE` that this scheme
        accepts (the `t` key steps through them from whatever the key uses now)."""
        current = key.params.get(field)
        start = TRIGGER_CYCLE.index(current) + 1 if current in TRIGGER_CYCLE else 0
        for kind in (TRIGGER_CYCLE * 2)[start : start + len(TRIGGER_CYCLE)]:
            if kind == current:
                continue
            try:
                self.check(parse_params(self.Params, {**key.params, field: kind}))
            except ConfigError:
                continue
            return kind
        raise ConfigError(f"scheme {self.name!r} has no other trigger to switch to")


def needs_model_message(scheme: str) -> str:
    return (
        f"{scheme} makes its keys from a trained model: give --from RUN "
        "(train one with wmtui train)"
    )


SCHEMES: Registry[type[Watermark]] = Registry("scheme")


def register_scheme(name: str, params: type) -> Callable[[type[Watermark]], type[Watermark]]:
    """``@register_scheme("pattern", PatternParams)`` on a :class:`Watermark` subclass."""

    def decorate(cls: type[Watermark]) -> type[Watermark]:
        cls.name = name
        cls.Params = params
        return SCHEMES.register(name, params)(cls)

    return decorate


def get_scheme(name: str) -> Watermark:
    return SCHEMES.get(name).factory()


def parse_scheme_params(name: str, values: Mapping[str, Any] | None = None) -> Any:
    """Validated params for scheme ``name``; a key of another scheme is named as such. The
    values come from TOML files, forms and flags alike, so the message names a key (the
    command line names its flags itself, before this)."""
    plugin = SCHEMES.get(name)
    assert plugin.params is not None
    own = {f.name for f in dataclasses.fields(plugin.params)}
    for given in values or {}:
        if given.replace("-", "_") not in own:
            raise ConfigError(
                f"key {given!r} does not apply to scheme {name!r}{closest(given, own)} "
                f"(its keys: {', '.join(sorted(own))})"
            )
    params = parse_params(plugin.params, values)
    plugin.factory().check(params)
    return params


def per_batch(batch_size: int, ratio: float) -> int:
    """Key images per step: a share of the owner's batch, at least one."""
    return max(1, round(batch_size * ratio))


def key_source(
    key: Key,
    x: torch.Tensor,
    batch_size: int,
    y: torch.Tensor | int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Source:
    """The key set's share of every training batch, at the key's injection ratio; ``y`` is a
    label per image or one target label for all."""
    if isinstance(y, int):
        y = torch.full((len(x),), y, device=x.device)
    return Source(
        "key", x, per_batch(batch_size, key.params["inject_ratio"]), y=y, transform=transform
    )


def decoy_sources(
    key: Key,
    batch_size: int,
    device: torch.device,
    y: int | None = None,
    transform: Callable[[int], Callable[[torch.Tensor], torch.Tensor]] | None = None,
    salt: str = "",
) -> list[Source]:
    """The decoys' share (none when the key was made without decoys): the key's stored decoy
    images, with their true labels unless ``y`` gives one label for all. ``transform`` builds
    the stamper from a seed drawn from the key's own seed and ``salt``, so every scheme's decoy
    content is reproducible from its key alone."""
    ratio = float(key.params.get("decoy_ratio", 0.0))
    if ratio <= 0 or "decoy_x" not in key.tensors:
        return []
    x = key.tensor("decoy_x", device)
    labels = key.tensor("decoy_y", device) if y is None else torch.full((len(x),), y, device=device)
    stamp = None
    if transform is not None:
        gen = generator(int(key.meta["seed"]), salt)
        stamp = transform(int(torch.randint(0, 2**62, (1,), generator=gen)))
    return [Source("decoy", x, per_batch(batch_size, ratio), y=labels, transform=stamp)]


# -- the Key on disk ----------------------------------------------------------------------
def save_key(folder: str | Path, key: Key) -> Path:
    """Write ``key.json`` + ``key.safetensors`` (0600) into ``folder`` (0700), atomically:
    both files are written into a temporary sibling folder that is then renamed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        raise RunError(f"{folder} already holds a key; refusing to overwrite a secret")
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o700)
        save_tensors(tmp / KEY_TENSORS, key.tensors, mode=SECRET_MODE)
        record = {"scheme": key.scheme, "params": key.params, **key.meta}
        atomic_write_json(tmp / KEY_JSON, record, mode=SECRET_MODE)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_key(folder: str | Path) -> Key:
    """Read a key folder; anything missing or malformed is one RunError line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"key directory not found: {folder}")
    record = read_json(folder / KEY_JSON, "key record")
    if not isinstance(record, dict) or "scheme" not in record or "params" not in record:
        raise RunError(f"key record is corrupt: {folder / KEY_JSON} (no scheme/params)")
    tensors = load_tensors(folder / KEY_TENSORS, "key tensors")
    scheme = record.pop("scheme")
    params = record.pop("params")
    if scheme not in SCHEMES:
        raise RunError(f"key in {folder} uses unknown scheme {scheme!r}")
    for field in ("dataset", "in_shape", "num_classes", "num_outputs"):
        if field not in record:
            raise RunError(f"key record is corrupt: {folder / KEY_JSON} (no {field})")
    return Key(scheme, params, record, tensors)


def check_key_matches(key: Key, dataset: str, in_shape: tuple[int, ...], num_classes: int) -> None:
    """A key made for other data cannot be queried against this model: say which part differs.

    The model architecture is deliberately not compared: verification is black-box, and a
    stolen model may have been distilled into another architecture.
    """
    problems = []
    if key.meta["dataset"] != dataset:
        problems.append(f"dataset {key.meta['dataset']!r} vs the run's {dataset!r}")
    if tuple(key.meta["in_shape"]) != tuple(in_shape):
        problems.append(f"input shape {tuple(key.meta['in_shape'])} vs {tuple(in_shape)}")
    if int(key.meta["num_classes"]) != num_classes:
        problems.append(f"{key.meta['num_classes']} classes vs {num_classes}")
    if problems:
        raise RunError("key does not match the run: " + "; ".join(problems))


def check_label(label: int, num_classes: int, flag: str = "target-label") -> None:
    if not 0 <= label < num_classes:
        raise ConfigError(
            f"{flag} {label}: the dataset has {num_classes} classes (0-{num_classes - 1})"
        )


def generator(seed: int, salt: str) -> torch.Generator:
    """A private CPU generator per (seed, purpose): keygen never touches the global RNG, so
    a watermarked model starts from the same weights as a clean one with the same seed."""
    mixed = (seed * 1_000_003 + sum(ord(c) * 131**i for i, c in enumerate(salt))) % 2**63
    return torch.Generator().manual_seed(mixed)
