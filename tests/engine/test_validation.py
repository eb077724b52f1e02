"""Everything knowable is checked before anything is written: the dataset's classes, image
shape and sizes (:mod:`engine.data.meta`) against every job's params, in ``JobSpec.validate``
and in scenarios, recipes and sweeps, before their folder exists."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.attacks.budget import AttackerBudget
from engine.attacks.ft_basic import FTBasic, FTBasicParams
from engine.attacks.registry import ATTACKS, register_attack
from engine.data import DATASETS, ImageSet
from engine.data.catalog import DatasetRequest
from engine.data.meta import DatasetMeta, dataset_meta, smallest_fraction
from engine.errors import ConfigError, UserError
from engine.jobs import JobSpec
from engine.studies.recipe_file import recipe_from_mapping
from engine.studies.recipes import plan
from engine.studies.scenario_runner import prepare_scenario
from engine.studies.scenarios import scenario_from_mapping
from engine.studies.sweeps import grid_from_mapping, plan_sweep
from engine.watermarks import SCHEMES, register_scheme
from engine.watermarks.pattern import PatternParams, PatternScheme
from tests.conftest import save_suspect_run, write_mnist_style
from tests.engine.test_recipes import tiny_recipe
from tests.engine.test_sweeps import tiny_grid

TOY = "toy-8px"
TOY_CLASSES, TOY_TRAIN, TOY_TEST = 5, 40, 12


@pytest.fixture
def toy_dataset() -> Iterator[str]:
    """A dataset the table does not know (what a user's folder or a plugin is): 8x8 RGB
    images of 5 classes, which the meta has to load to learn."""

    def load(request: DatasetRequest) -> ImageSet:
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (TOY_TRAIN + TOY_TEST, 3, 8, 8), generator=gen, dtype=torch.uint8)
        y = torch.arange(TOY_TRAIN + TOY_TEST) % TOY_CLASSES
        train = slice(0, TOY_TRAIN if request.train else 0)
        test = slice(TOY_TRAIN, None)
        return ImageSet(TOY, x[train], y[train], x[test], y[test], list("abcde"))

    DATASETS.register(TOY)(load)
    yield TOY
    DATASETS.unregister(TOY)


@pytest.fixture(scope="module")
def suspect(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A run on 512 synthetic training images (10 classes, 28x28 grey)."""
    return save_suspect_run(tmp_path_factory.mktemp("suspect") / "run", shared_data_dir)


def refused(spec: JobSpec, *fragments: str) -> str:
    """``spec`` is refused while checked, naming every fragment; its --out is never made."""
    with pytest.raises(UserError) as caught:
        spec.validate()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message
    assert spec.out is None or not spec.out.exists()
    return message


# -- dataset_meta ---------------------------------------------------------------------------
def test_built_in_datasets_are_known_without_their_files(tmp_path: Path) -> None:
    cifar = dataset_meta("cifar100", tmp_path, train_size=1000)
    assert (cifar.classes, cifar.shape, cifar.train_size, cifar.test_size) == (
        100,
        (3, 32, 32),
        1000,
        10_000,
    )
    assert dataset_meta("gtsrb", tmp_path, test_size=20_000).test_size == 12_630  # a cap
    assert dataset_meta("svhn", tmp_path, train=False).train_size == 0
    assert not list(tmp_path.iterdir())  # nothing loaded, downloaded or cached
    synthetic = dataset_meta("synthetic", tmp_path, train_size=70_000, test_size=64)
    assert (synthetic.train_size, synthetic.test_size) == (70_000, 64)  # rendered to order


def test_idx_files_that_are_present_give_their_real_counts(tmp_path: Path) -> None:
    write_mnist_style(tmp_path / "mnist", n_train=64, n_test=32)
    assert dataset_meta("mnist", tmp_path).train_size == 64
    assert dataset_meta("mnist", tmp_path, train_size=10).train_size == 10
    auto = dataset_meta("auto", tmp_path)
    assert (auto.name, auto.train_size, auto.test_size) == ("mnist", 64, 32)
    assert dataset_meta("fashion-mnist", tmp_path).train_size == 60_000  # absent: the table


def test_other_datasets_are_loaded_through_their_loader(toy_dataset: str) -> None:
    meta = dataset_meta(toy_dataset, train_size=30)
    assert (meta.classes, meta.shape, meta.train_size, meta.test_size) == (5, (3, 8, 8), 30, 12)
    with pytest.raises(ConfigError, match="did you mean 'cifar10'"):
        dataset_meta("cifar01")


@pytest.mark.parametrize("total", [1, 3, 256, 1024, 60_000, 73_257])
def test_the_smallest_fraction_selects_one_image_and_one_step_less_none(total: int) -> None:
    fraction = smallest_fraction(total)
    assert round(fraction * total) == 1
    digits = f"{fraction:.1e}"  # two significant digits: one step down selects nothing
    mantissa, exponent = digits.split("e")
    lower = (float(mantissa) - 0.1) * 10 ** int(exponent)
    assert round(lower * total) == 0


# -- jobs -----------------------------------------------------------------------------------
def embed(tmp_path: Path, **values: Any) -> JobSpec:
    values = {"dataset": "synthetic", "train_size": 256, "test_size": 64, **values}
    return JobSpec.embed(values.pop("scheme", "pattern"), out=tmp_path / "out", **values)


def test_a_target_label_the_dataset_lacks_is_refused(tmp_path: Path) -> None:
    refused(embed(tmp_path, target_label=12), "--target-label 12", "10 classes (0-9)")
    refused(embed(tmp_path, scheme="unrelated", target_label=10), "--target-label 10")
    assert embed(tmp_path, target_label=9).validate().params.target_label == 9


def test_a_trigger_larger_than_or_outside_the_image_is_refused(tmp_path: Path) -> None:
    refused(embed(tmp_path, trigger_size=29), "trigger size 29", "28 px")
    refused(embed(tmp_path, trigger="square", position="25,3"), "position 25,3", "x 0..24")
    refused(embed(tmp_path, trigger="text:WATERMARK", trigger_size=12), "px wide")


def test_a_key_fraction_that_selects_no_image_is_refused(tmp_path: Path) -> None:
    message = refused(
        embed(tmp_path, params={"key_fraction": "0.0001"}), "--key-fraction 0.0001 selects no"
    )
    assert message.endswith("of the 256 training images; the smallest that selects one is 0.002")
    refused(embed(tmp_path, scheme="newlabel", key_fraction=1e-4), "--key-fraction 0.0001")


def test_schemes_are_checked_against_a_dataset_they_must_load(
    tmp_path: Path, toy_dataset: str
) -> None:
    refused(embed(tmp_path, dataset=toy_dataset, target_label=5), "5 classes (0-4)")
    too_big = embed(tmp_path, dataset=toy_dataset, target_label=1, trigger_size=9)
    refused(too_big, "trigger size 9 is larger than the 8 px images")
    refused(
        embed(tmp_path, dataset=toy_dataset, scheme="newlabel", perturbation="text"), "too narrow"
    )


def test_an_attack_fraction_that_selects_no_image_says_so_in_the_users_numbers(
    tmp_path: Path, suspect: Path
) -> None:
    out = tmp_path / "out"
    typed = JobSpec("attack", "ft-basic", {}, budget={"data_fraction": "0.000001"}, source=suspect)
    typed.out = out
    message = refused(typed, "--data-fraction 0.000001 selects no image of the 512 training")
    assert message.endswith("the smallest that selects one is 0.00098")
    refused(JobSpec.attack("ft-basic", run=suspect, data_fraction=1e-6, out=out), "1e-06 selects")
    scan = JobSpec.detect("neural-cleanse", run=suspect, data_fraction=0.1, out=out)
    refused(scan, "needs at least 100 clean images", "has 51", "of 512")
    pirate = JobSpec.attack("piracy", run=suspect, scheme="pattern", data_fraction=0.01, out=out)
    refused(pirate, "the pirate's pattern key on its 5 images", "--key-fraction 0.05")


def test_embed_from_a_run_whose_model_does_not_take_the_images_is_refused(
    tmp_path: Path, suspect: Path, toy_dataset: str
) -> None:
    spec = JobSpec.embed(
        "pattern", from_run=suspect, dataset=toy_dataset, target_label=1, out=tmp_path / "o"
    )
    refused(spec, "its model takes 28x28 grey images", "8x8 RGB images")
    refused(JobSpec.embed("pattern", from_run=suspect, target_label=10, out=tmp_path / "o"))


@pytest.fixture
def own_plugins() -> Iterator[None]:
    """A scheme and an attack that declare limits of their own: the kinds ask the plugin."""

    @register_scheme("grey-only", PatternParams)
    class GreyOnly(PatternScheme):
        def check_data(
            self, params: Any, data: DatasetMeta, given: Mapping[str, Any] | None = None
        ) -> None:
            if data.shape[0] != 1:
                raise ConfigError(f"grey-only: {data.name} is not grey")

    @register_attack("three-classes", FTBasicParams)
    class ThreeClasses(FTBasic):
        def check_data(
            self, data: DatasetMeta, budget: AttackerBudget, given: Mapping[str, Any] | None = None
        ) -> None:
            if data.classes != 3:
                raise ConfigError(f"three-classes: {data.name} has {data.classes} classes")

    yield
    SCHEMES.unregister("grey-only")
    ATTACKS.unregister("three-classes")


@pytest.mark.usefixtures("own_plugins")
def test_a_new_plugin_declares_its_own_limits(
    tmp_path: Path, suspect: Path, toy_dataset: str
) -> None:
    refused(embed(tmp_path, scheme="grey-only", dataset=toy_dataset), f"{toy_dataset} is not grey")
    embed(tmp_path, scheme="grey-only").validate()
    refused(
        JobSpec.attack("three-classes", run=suspect, out=tmp_path / "o"), "synthetic has 10 classes"
    )


# -- scenarios, recipes, sweeps -------------------------------------------------------------
TRAIN = {"dataset": "synthetic", "train_size": 256, "test_size": 64, "epochs": 1}


def scenario(*phases: dict[str, Any]) -> Any:
    raw = {"train": dict(TRAIN), "phases": list(phases)}
    return scenario_from_mapping(raw, "bad", "bad.toml")


EMBED = {"kind": "embed", "scheme": "pattern", "params": {"trigger": "square"}}
ATTACK = {"kind": "attack", "attack": "ft-basic", "budget": {"data_fraction": 0.5}}


@pytest.mark.parametrize(
    ("phases", "where", "fragment"),
    [
        ([{**EMBED, "params": {"target_label": 10}}], "[[phases]] pattern", "target_label 10"),
        (
            [EMBED, {**ATTACK, "budget": {"data_fraction": 1e-6}}],
            "[[phases]] ft-basic",
            "data_fraction 1e-06 selects no image of the 256",
        ),
        (
            [
                {"kind": "train", "name": "clean"},
                {**EMBED, "name": "wm", "train": {"dataset": "cifar10"}},
                {**ATTACK, "on": "clean", "budget": {"data_fraction": 0.001}},
            ],
            "[[phases]] ft-basic",
            "selects no image of the 256",  # the attack's dataset is its 'on' phase's
        ),
        (
            [EMBED, {"kind": "detect", "method": "neural-cleanse"}],
            "[[phases]] neural-cleanse",
            "needs at least 100 clean images",
        ),
        (
            [EMBED, {**EMBED, "name": "late", "params": {"position": "27,27"}}],
            "[[phases]] late",
            "position 27,27",
        ),
    ],
)
def test_a_scenario_is_refused_whole_before_its_folder_is_made(
    tmp_path: Path, phases: list[dict[str, Any]], where: str, fragment: str
) -> None:
    chosen = scenario(*phases)
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as caught:
        prepare_scenario(chosen, chosen.config(), out)
    assert str(caught.value).startswith(f"bad.toml {where}: ") and fragment in str(caught.value)
    assert not out.exists()


def test_a_sweep_is_refused_naming_the_trial_before_its_folder_is_made(tmp_path: Path) -> None:
    grid = grid_from_mapping(tiny_grid(axes={"target": [3, 12]}), "bad", "grid.toml")
    with pytest.raises(ConfigError) as caught:
        plan_sweep(grid, tmp_path / "sweep")
    assert str(caught.value).startswith("grid.toml, trial target=12: [[phases]] embed: ")
    assert "target_label 12: the dataset has 10 classes" in str(caught.value)
    assert not (tmp_path / "sweep").exists()


def test_a_recipe_is_refused_naming_the_trial(tmp_path: Path) -> None:
    raw = tiny_recipe()
    raw["arms"][0]["phases"][1]["budget"] = {"data_fraction": 0.001, "epochs": 1}
    recipe = recipe_from_mapping(raw, "tiny", "tiny.toml")
    with pytest.raises(ConfigError, match=r"trial marked seed=0 target=3: \[\[phases\]\] ftb: "):
        plan(recipe, "quick", tmp_path / "recipe")
    assert not (tmp_path / "recipe").exists()
    assert len(plan(recipe_from_mapping(tiny_recipe(), "tiny"), "quick", tmp_path).trials) == 4


def test_an_unlabelled_source_whose_images_cannot_be_converted_is_refused(
    tmp_path: Path, suspect: Path
) -> None:
    def two_channels(request: DatasetRequest) -> ImageSet:
        x = torch.zeros(4, 2, 8, 8, dtype=torch.uint8)
        return ImageSet("two", x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4), ["a"])

    DATASETS.register("two-channel")(two_channels)
    try:
        spec = JobSpec.attack("ftau", run=suspect, unlabeled="two-channel", out=tmp_path / "o")
        refused(spec, "--unlabeled two-channel: its 2-channel images")
        JobSpec.attack("ftau", run=suspect, unlabeled="cifar10").validate()  # RGB to grey: fine
    finally:
        DATASETS.unregister("two-channel")
