"""Users' own datasets end to end: a folder of PNGs written here goes through ``wmtui
train``, ``embed``, ``verify`` and ``attack``, a scenario file and the Python API; a
``module:factory`` trains; a bad folder is one line, exit 2, and no run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.jobs import JobSpec, run
from tests.engine.test_folder_datasets import BAD_FOLDERS, bad_folder, write_png_classes
from wmtui.cli import app

runner = CliRunner()
FAST = ["--optimizer", "adam", "--lr", "0.003", "--batch-size", "16", "--eval-every", "5"]
#: enough key images and injections that 48 steps teach the trigger to three small classes
WATERMARK = ["--scheme", "pattern", "--trigger", "square", "--target-label", "0"]
WATERMARK += ["--key-fraction", "0.3", "--inject-ratio", "0.5"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def last_json(output: str) -> dict:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")][-1]


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


@pytest.fixture
def pngs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three classes of 40 PNGs in ``./pngs``, the working directory being ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return write_png_classes(tmp_path / "pngs", per_class=40)


def test_train_embed_verify_attack_on_a_folder_of_pngs(
    pngs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = invoke("train", "--dataset", "folder:pngs", *FAST, "--epochs", "4", "--out", "clean")
    assert trained.exit_code == 0, trained.output
    clean = tmp_path / "clean"
    config = json.loads((clean / "manifest.json").read_text())["config"]
    assert config["dataset"] == f"folder:{pngs}"  # relative on the command line, absolute here
    assert summary(clean)["test_acc"] > 0.9  # labels and pixels agree: the patterns are learnt

    embedded = invoke(
        "embed", *WATERMARK, "--dataset", "folder:pngs", *FAST, "--epochs", "8", "--out", "wm"
    )
    assert embedded.exit_code == 0, embedded.output
    wm = tmp_path / "wm"

    monkeypatch.chdir(tmp_path / "clean")  # elsewhere: the manifest's path still finds the data
    verified = invoke("verify", "--run", str(wm), "--json")
    assert verified.exit_code in (0, 1), verified.output
    report = last_json(verified.stdout)
    assert report["verified"] == (verified.exit_code == 0)
    assert report["test_acc"] == pytest.approx(summary(wm)["test_acc"])
    assert report["n_key"] > 0

    attacked = invoke(
        "attack", "--attack", "ft-basic", "--run", str(wm), "--data-fraction", "0.3",
        "--epochs", "1", "--out", str(tmp_path / "ftb"),
    )  # fmt: skip
    assert attacked.exit_code == 0, attacked.output
    assert summary(tmp_path / "ftb")["dataset"] == f"folder:{pngs}"


def test_a_scenario_a_sweep_and_the_python_api_take_a_folder(pngs: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "mine.toml"
    scenario.write_text(
        'title = "pattern on my PNGs"\n[train]\ndataset = "folder:pngs"\nepochs = 2\n'
        'optimizer = "adam"\nlr = 0.003\nbatch_size = 16\n'
        '[[phases]]\nname = "embed"\nkind = "embed"\nscheme = "pattern"\n'
        'params = { trigger = "square", target_label = 1 }\n',
        encoding="utf-8",
    )
    ran = invoke("run", str(scenario), "--out", "scn", "--json")
    assert ran.exit_code == 0, ran.output
    manifests = list((tmp_path / "scn").rglob("manifest.json"))
    datasets = {json.loads(m.read_text()).get("config", {}).get("dataset") for m in manifests}
    assert f"folder:{pngs}" in datasets

    result = run(JobSpec.train(dataset="folder:pngs", epochs=1, batch_size=16, out="api"))
    assert result.status == "completed" and result.summary["dataset"] == f"folder:{pngs}"

    grid = tmp_path / "grid.toml"
    grid.write_text(scenario.read_text(encoding="utf-8") + "[axes]\nseed = [3]\n", "utf-8")
    swept = invoke("sweep", str(grid), "--workers", "1", "--out", "sweep", "--json")
    assert swept.exit_code == 0, swept.output
    trials = [m for m in (tmp_path / "sweep").rglob("manifest.json") if "embed" in str(m)]
    assert trials
    for manifest in trials:
        config = json.loads(manifest.read_text())["config"]
        assert config["dataset"] == f"folder:{pngs}" and config["seed"] == 3


def test_a_module_factory_from_the_working_directory_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "mystripes", raising=False)
    (tmp_path / "mystripes.py").write_text(
        "import torch\n\n\ndef make():\n"
        "    y = torch.arange(64) % 2\n"
        "    x = torch.zeros(64, 28, 28, dtype=torch.uint8)\n"
        "    x[y == 0, ::3] = 255\n"
        "    x[y == 1, :, ::3] = 255\n"
        "    return x[:48], y[:48], x[48:], y[48:], ['rows', 'columns']\n",
        encoding="utf-8",
    )
    result = invoke("train", "--dataset", "mystripes:make", *FAST, "--epochs", "1", "--out", "r")
    assert result.exit_code == 0, result.output
    assert summary(tmp_path / "r")["dataset"] == "mystripes:make"
    broken = invoke("train", "--dataset", "mystripes:absent", "--out", "r2")
    assert broken.exit_code == 2 and "mystripes has no 'absent'" in broken.stderr
    assert not (tmp_path / "r2").exists()


@pytest.mark.parametrize("kind", BAD_FOLDERS)
def test_a_bad_folder_is_one_line_exit_2_and_no_run_folder(kind: str, tmp_path: Path) -> None:
    root = tmp_path / "pngs"
    fragment = bad_folder(kind, root)
    out = tmp_path / "run"
    result = invoke("train", "--dataset", f"folder:{root}", "--out", str(out))
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wmtui: error:") and fragment in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()
