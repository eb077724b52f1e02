"""Users' own datasets: ``folder:PATH`` of PNGs written here, and ``package.module:factory``;
both load through ``load_dataset`` like the built-in names, and bad ones are one DataError."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import TrainConfig
from engine.data import DATASETS, load_dataset, require_dataset
from engine.data.folder import SPLIT_SEED, TEST_FRACTION
from engine.errors import ConfigError, DataError, UserError

CLASSES = ("bars", "columns", "square")


def pattern(label: int, index: int, size: int = 28) -> np.ndarray:
    """A grey image of class ``label``: horizontal bars, vertical bars or a centred square,
    over seeded noise and shifted by a pixel or two, so a small CNN learns them in a few
    steps yet no two images are equal."""
    rng = np.random.default_rng(1000 * label + index)
    img = rng.integers(0, 60, (size, size))
    shift = index % 3
    if label == 0:
        img[shift::4, :] = 230
    elif label == 1:
        img[:, shift::4] = 230
    else:
        img[8 + shift : 20 + shift, 8:20] = 230
    return img.astype(np.uint8)


def write_png_classes(
    root: Path, per_class: int = 10, size: int = 28, classes: tuple[str, ...] = CLASSES
) -> Path:
    """``root/<class>/<i>.png`` for each class (greyscale PNGs)."""
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(pattern(label, i, size)).save(root / name / f"{i:03d}.png")
    return root


def cache_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "wmtui-cache").glob("folder-*.safetensors"))


def test_class_folders_load_with_a_seeded_stratified_split(tmp_path: Path) -> None:
    root = write_png_classes(tmp_path / "pngs", per_class=10)
    data = load_dataset(f"folder:{root}", tmp_path / "dd").data
    assert data.name == f"folder:{root}" and data.classes == list(CLASSES)
    assert data.shape == (1, 28, 28) and data.train_x.dtype == torch.uint8
    assert len(data.train_x) + len(data.test_x) == 30
    # a fifth of every class is held out, so the test split has every class
    per_class_test = torch.bincount(data.test_y, minlength=3).tolist()
    assert per_class_test == [round(TEST_FRACTION * 10)] * 3
    # the stored pixels are the files' pixels: find one training image among the files
    label = int(data.train_y[0])
    files = sorted((root / CLASSES[label]).iterdir())
    assert any(np.array_equal(np.asarray(Image.open(f)), data.train_x[0, 0].numpy()) for f in files)
    # classes are mixed in the stored order: the first few images are not all one class
    assert len(set(data.train_y[:8].tolist())) > 1
    again = load_dataset(f"folder:{root}", tmp_path / "other-cache").data
    assert torch.equal(again.test_x, data.test_x) and SPLIT_SEED == 0


def test_train_and_test_subfolders_keep_the_users_split(tmp_path: Path) -> None:
    write_png_classes(tmp_path / "set" / "train", per_class=6)
    write_png_classes(tmp_path / "set" / "test", per_class=2)
    data = load_dataset(f"folder:{tmp_path / 'set'}", tmp_path / "dd").data
    assert len(data.train_x) == 18 and len(data.test_x) == 6
    assert torch.bincount(data.test_y).tolist() == [2, 2, 2]


def test_one_colour_image_makes_the_whole_set_rgb(tmp_path: Path) -> None:
    root = write_png_classes(tmp_path / "pngs", per_class=3)
    grey = load_dataset(f"folder:{root}", tmp_path / "dd").data
    assert grey.shape == (1, 28, 28)
    Image.new("RGB", (28, 28), (255, 0, 0)).save(root / "square" / "red.png")
    colour = load_dataset(f"folder:{root}", tmp_path / "dd").data
    assert colour.shape == (3, 28, 28)
    red = [x for x in torch.cat([colour.train_x, colour.test_x]) if int(x[1].max()) == 0]
    assert len(red) == 1 and int(red[0][0].min()) == 255
    grey_as_rgb = colour.train_x[colour.train_y == 0]
    assert torch.equal(grey_as_rgb[:, 0], grey_as_rgb[:, 2])


def test_the_cache_is_reused_and_a_changed_file_is_decoded_afresh(tmp_path: Path) -> None:
    root = write_png_classes(tmp_path / "pngs", per_class=5)
    data_dir = tmp_path / "dd"
    first = load_dataset(f"folder:{root}", data_dir).data
    (cache,) = cache_files(data_dir)
    stamp = cache.stat().st_mtime_ns
    second = load_dataset(f"folder:{root}", data_dir).data
    assert cache_files(data_dir) == [cache] and cache.stat().st_mtime_ns == stamp
    assert torch.equal(first.train_x, second.train_x)

    changed = root / "bars" / "000.png"
    Image.fromarray(np.full((28, 28), 7, np.uint8)).save(changed)
    os.utime(changed, ns=(stamp + 10**9, stamp + 10**9))  # a new mtime even on coarse clocks
    third = load_dataset(f"folder:{root}", data_dir).data
    (new_cache,) = cache_files(data_dir)  # the stale copy is gone
    assert new_cache != cache
    images = torch.cat([third.train_x, third.test_x])
    assert any(bool((x == 7).all()) for x in images)
    assert not any(bool((x == 7).all()) for x in torch.cat([first.train_x, first.test_x]))


def test_relative_folders_become_absolute_when_the_config_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_png_classes(tmp_path / "pngs", per_class=2)
    monkeypatch.chdir(tmp_path)
    config = TrainConfig.from_mapping({"dataset": "folder:pngs"})
    assert config.dataset == f"folder:{tmp_path / 'pngs'}"
    assert config.replace(epochs=3).dataset == config.dataset
    assert DATASETS.get("folder:pngs").name == config.dataset
    with pytest.raises(ConfigError, match="folder:PATH"):
        TrainConfig.from_mapping({"dataset": "folder:"})


def bad_folder(kind: str, root: Path) -> str:
    """Break a folder of PNGs in one way; returns what the error line must mention."""
    if kind == "missing":
        return f"folder:{root}: no such folder"
    if kind == "no classes":
        root.mkdir()
        (root / "loose.png").write_bytes(b"")
        return "no class folders"
    if kind == "one class":
        write_png_classes(root, per_class=2, classes=("only",))
        return "only one class folder (only)"
    write_png_classes(root, per_class=2)
    if kind == "mixed sizes":
        Image.new("L", (32, 32)).save(root / "bars" / "big.png")
        return "images differ in size"
    if kind == "not an image":
        (root / "columns" / "notes.txt").write_text("hello")
        return f"{root / 'columns' / 'notes.txt'}: not an image"
    if kind == "truncated":
        data = (root / "square" / "000.png").read_bytes()
        (root / "square" / "000.png").write_bytes(data[: len(data) // 2])
        return str(root / "square" / "000.png")
    if kind == "empty class":
        (root / "empty").mkdir()
        return "empty: class folder holds no images"
    if kind == "lone train":
        (root / "train").mkdir()
        return "has train/ but no test/"
    raise AssertionError(kind)


BAD_FOLDERS = [
    "missing",
    "no classes",
    "one class",
    "mixed sizes",
    "not an image",
    "truncated",
    "empty class",
    "lone train",
]


@pytest.mark.parametrize("kind", BAD_FOLDERS)
def test_bad_folders_are_one_data_error_and_nothing_is_cached(kind: str, tmp_path: Path) -> None:
    root = tmp_path / "pngs"
    fragment = bad_folder(kind, root)
    with pytest.raises(DataError) as caught:
        require_dataset(f"folder:{root}", tmp_path / "dd")
    message = str(caught.value)
    assert fragment in message and "\n" not in message
    assert not (tmp_path / "dd").exists()


# -- package.module:factory ---------------------------------------------------------------
FACTORIES = """
import numpy as np
import torch
from engine.data import ImageSet


def blobs(n=40, size=12, channels_last=True):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    x = rng.integers(0, 50, (n, size, size, 3)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, 3 * label : 3 * label + 3] = 240
    if not channels_last:
        x = x.transpose(0, 3, 1, 2)
    return x[:30], y[:30], x[30:], y[30:], ["a", "b", "c", "d"]


def nchw():
    return blobs(channels_last=False)[:4]


def imageset():
    x = torch.zeros(6, 1, 5, 5, dtype=torch.uint8)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    return ImageSet("mine", x, y, x[:2], y[:2], ["no", "yes"])


def floats():
    x, y, tx, ty, _ = blobs()
    return x / 255.0, y, tx, ty


def short_labels():
    x, y, tx, ty, _ = blobs()
    return x, y[:-1], tx, ty


def bad_shape():
    x, y, tx, ty, _ = blobs()
    return x[:, :, :, :2], y, tx[:, :, :, :2], ty


def sizes_differ():
    x, y, tx, ty, _ = blobs()
    return x, y, tx[:, :6, :6], ty


def out_of_range():
    x, y, tx, ty, names = blobs()
    return x, y, tx, ty, names[:2]


def one_class():
    x, y, tx, ty, _ = blobs()
    return x, y * 0, tx, ty * 0


def nothing():
    return None


def fails():
    raise RuntimeError("disk on fire")


constant = 3
"""


@pytest.fixture
def mydata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's module of dataset factories, importable as ``mydata``."""
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "mydata.py").write_text(FACTORIES, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "mydata", raising=False)
    return "mydata"


def test_a_factorys_arrays_become_an_image_set(mydata: str, tmp_path: Path) -> None:
    data = load_dataset(f"{mydata}:blobs", tmp_path / "dd", test_size=4).data
    assert data.name == "mydata:blobs" and data.classes == ["a", "b", "c", "d"]
    assert data.shape == (3, 12, 12) and len(data.train_x) == 30 and len(data.test_x) == 4
    assert data.train_y.dtype == torch.long
    # NHWC arrays are turned to NCHW: class 2's bright rows 6-8 are rows, in every channel
    third = data.train_x[data.train_y == 2][0]
    assert bool((third[:, 6:9, :] == 240).all())
    nchw = load_dataset(f"{mydata}:nchw", tmp_path / "dd").data
    assert torch.equal(nchw.train_x, data.train_x) and nchw.classes == ["0", "1", "2", "3"]
    own = load_dataset(f"{mydata}:imageset", tmp_path / "dd").data
    assert own.name == "mydata:imageset" and own.classes == ["no", "yes"]


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        ("floats", "train_x is float64; images must be uint8"),
        ("short_labels", "train_y has shape (29,); it must be [30]"),
        ("bad_shape", "train_x has shape (30, 12, 12, 2)"),
        ("sizes_differ", "test_x images are (3, 6, 6)"),
        ("out_of_range", "2 class names but labels go up to 3"),
        ("one_class", "only one class"),
        ("nothing", "returned NoneType"),
        ("fails", "the factory failed: disk on fire"),
        ("constant", "constant is not callable"),
        ("absent", "mydata has no 'absent'"),
    ],
)
def test_a_factory_that_breaks_the_contract_is_one_line(
    mydata: str, factory: str, fragment: str, tmp_path: Path
) -> None:
    with pytest.raises(UserError) as caught:
        require_dataset(f"{mydata}:{factory}", tmp_path / "dd")
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_module_that_does_not_import_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot import no_such_module_here"):
        load_dataset("no_such_module_here:make", tmp_path)
    with pytest.raises(ConfigError, match=r"package\.module:function"):
        TrainConfig(dataset="not a module:f")
