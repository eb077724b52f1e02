"""Two SoK removal attacks refereed end to end on the session's tiny pattern model:
``overwriting`` (a fresh watermark of the attacker's over the owner's) and
``neural-laundering`` (Neural Cleanse's reversed trigger, the neurons it excites reset, then
fine-tuning)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.attacks.laundering import (
    LaunderingParams,
    activation_rise,
    candidate_layers,
    reset_units,
)
from engine.attacks.neural_cleanse import mask_pattern_trigger
from engine.data import load_dataset
from engine.jobs import JobSpec, run
from engine.jobs.own_key import own_choices, own_seed
from engine.models import Architecture, build_model
from engine.runs import RunDir
from engine.watermarks import get_scheme, load_key


def test_overwriting_embeds_a_verifiable_attacker_key_and_scores_the_owners(
    pattern_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "overwritten"
    # an attacker seed whose drawn target is not the owner's 0: on the owner's target the
    # attacker's word sits where the owner's trigger does and its decoy null fires (a real
    # outcome, 1 draw in 10, that this test is not about)
    seed = next(s for s in range(10) if own_choices("pattern", own_seed(s), 10)["target_label"])
    spec = JobSpec.attack(
        "overwriting", run=pattern_run, lr=0.003, data_fraction=0.5, steps=150, seed=seed, out=out
    )
    summary = run(spec).summary
    assert summary["status"] == "completed"
    # the owner's key is what the attack is about: scored before and after by the referee
    before, after = summary["before"]["retention"], summary["after"]["retention"]
    assert after["key"] < before["key"]  # the fresh mark crowds the owner's out
    # the attacker's own key: streamed while it trains, verified afterwards, kept
    assert after["attacker"] > before.get("attacker", 0.0)
    (claim,) = summary["claims"]
    assert claim["key"].startswith("pattern")
    assert (
        summary["info"] | {"labels": "predicted", "attacker_scheme": "pattern"} == summary["info"]
    )
    key = load_key(out / "pirate-key")
    assert key.scheme == "pattern"
    # the attacker's mark is its own, not the owner's defaults trained in again
    owner = load_key(pattern_run / "key")
    assert key.params["text"] not in (owner.params["text"], "TEST")
    # the verdict in the summary is the one a verifier gets from the saved model and key
    model, _ = RunDir(out).load_model("cpu")
    data = load_dataset("synthetic", train_size=1024, test_size=256).data
    again = get_scheme("pattern").verify(model, key, data, 1e-3).to_dict()
    assert again["verified"] == claim["verified"] is True
    assert again["p_value"] == pytest.approx(claim["p_value"])


def test_an_attackers_own_target_is_drawn_from_its_seed_not_the_defaults() -> None:
    drawn = [own_choices("unrelated", own_seed(seed), 10)["target_label"] for seed in range(40)]
    assert drawn == [own_choices("unrelated", own_seed(s), 10)["target_label"] for s in range(40)]
    assert len(set(drawn)) >= 8  # spread over the classes, 7 (the default) no likelier
    assert own_choices("pattern", 0, 10)["text"] != "TEST"
    assert own_choices("abstract", 0, 10) == {}  # its labels are drawn per key image already


def test_an_overwriting_new_label_key_widens_the_suspects_head(
    pattern_run: Path, tmp_path: Path
) -> None:
    """A new-label key needs an output class the suspect lacks: the attacker's model gets
    it, every trained row kept (the saved model has 11 outputs, the summary a claim)."""
    out = tmp_path / "newlabel"
    spec = JobSpec.attack(
        "overwriting",
        run=pattern_run,
        scheme="newlabel",
        labels="true",
        data_fraction=0.2,
        steps=2,
        out=out,
    )
    summary = run(spec).summary
    model, arch = RunDir(out).load_model("cpu")
    assert arch.num_classes == 11 and model.classifier[-1].out_features == 11
    assert summary["claims"][0]["key"].startswith("newlabel")
    assert summary["info"]["labels"] == "true"


def test_neural_laundering_resets_neurons_and_reports_which_layers(
    pattern_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "laundered"
    spec = JobSpec.attack(
        "neural-laundering",
        run=pattern_run,
        scan_steps=20,
        scan_images=200,
        scan_batch=16,
        inits="random",
        samples=200,
        data_fraction=0.3,
        epochs=1,
        out=out,
    )
    summary = run(spec).summary
    info = summary["info"]
    assert summary["status"] == "completed"
    assert info["reset_units"] > 0
    assert info["reset_units"] == sum(layer["reset"] for layer in info["layers"].values())
    # lenet5's "late" layers: its second conv and both hidden dense layers, not the first
    # conv and not the output layer
    assert set(info["layers"]) == {"features.3", "classifier.0", "classifier.2"}
    assert info["layers"]["features.3"]["units"] == 16
    assert info["layers"]["classifier.0"]["units"] == 120
    assert summary["steps"] > 0  # it fine-tuned after the reset
    assert "detection" in info and len(info["detection"]["perturbation_sizes"]) == 10
    assert 0.0 <= summary["after"]["retention"]["key"] <= 1.0


def test_exactly_the_units_the_trigger_excites_beyond_the_thresholds_are_reset() -> None:
    """The rise is the stamped images' mean raw output minus the clean ones' (a conv
    channel: its largest over the map); the units above ``ct``/``dt`` get zero weights in,
    every other weight is left as it was."""
    torch.manual_seed(0)
    model = build_model(Architecture("lenet5", (1, 28, 28), 10))
    mask = torch.zeros(1, 28, 28)
    mask[:, -6:, -6:] = 1.0
    trigger = mask_pattern_trigger(3, mask, torch.ones(1, 28, 28), torch.zeros(1, 28, 28))
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    named = candidate_layers(model, "late")
    rises = activation_rise(model, [m for _, m in named], images, trigger.apply)
    # the first dense layer's rise, computed by hand
    with torch.no_grad():
        x = images.float() / 255
        first = model.classifier[0]
        by_hand = first(model.features(trigger.apply(x)).flatten(1)).mean(0) - first(
            model.features(x).flatten(1)
        ).mean(0)
    assert torch.allclose(rises[1], by_hand, atol=1e-5)
    ct, dt = float(rises[0].median()), float(rises[1].median())
    before = {n: m.weight.detach().clone() for n, m in named}
    report = reset_units(model, trigger, images, LaunderingParams(ct=ct, dt=dt))
    for (name, layer), rise in zip(named, rises, strict=True):
        hit = rise > (ct if isinstance(layer, nn.Conv2d) else dt)
        assert 0 < report[name]["reset"] == int(hit.sum()) < len(rise)
        assert torch.all(layer.weight[hit] == 0)
        assert torch.equal(layer.weight[~hit], before[name][~hit])


def test_layers_are_chosen_by_type_not_name() -> None:
    """resnet18: the later half of its 20 convs (shortcut projections included), no dense
    layer (its only Linear is the output); "all" takes every conv."""
    model = build_model(Architecture("resnet18", (3, 32, 32), 10))
    late = candidate_layers(model, "late")
    every = candidate_layers(model, "all")
    assert len(every) == 20 and len(late) == 10
    assert all(isinstance(m, nn.Conv2d) for _, m in every)
    assert [n for n, _ in late] == [n for n, _ in every][10:]
