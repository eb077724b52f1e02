"""The dataset registry: every name a user can type, and how each one is found on disk.

Real datasets load through torchvision from ``data_dir`` (downloading only when asked and
online); MNIST-style sets are read from IDX files wherever they are, including Debian's
``dataset-fashion-mnist`` package. ``auto`` picks the first one present.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.data.base import ImageSet
from engine.data.idx import IDX_FILES, find_idx_dir, idx_files, load_idx_dir
from engine.errors import DataError
from engine.registry import Plugin, Registry


@dataclass(frozen=True)
class DatasetRequest:
    """What a loader is asked for; sizes let the synthetic set render only what is used."""

    data_dir: Path
    download: bool = False
    train_size: int = 0
    test_size: int = 0
    #: False: load only the test split (the training files are never opened where the loader
    #: can avoid it: IDX sets, CIFAR, SVHN, synthetic); the training split comes back empty
    train: bool = True


Loader = Callable[[DatasetRequest], ImageSet]

#: ``folder:PATH`` names a folder of images; any other name with a colon is a user's
#: ``package.module:factory``
FOLDER_PREFIX = "folder:"


def is_user_dataset(name: str) -> bool:
    """A user's own data (a folder, a factory) rather than a registered name."""
    return ":" in name


def canonical_dataset(name: str) -> str:
    """The name as configs, manifests and keys record it: ``folder:`` made absolute (a run
    read from another working directory finds the same folder), a factory's spelling checked.
    Registered names pass unchanged (the registry checks them where they are used)."""
    if name.startswith(FOLDER_PREFIX):
        from engine.data.folder import canonical_folder

        return canonical_folder(name)
    if is_user_dataset(name):
        from engine.data.module_source import check_spelling

        return check_spelling(name)
    return name


class DatasetRegistry(Registry[Loader]):
    """The registered datasets, and users' own under the same lookup: every caller that asks
    for a dataset's loader by name (jobs, checks, attacks' unlabelled sources, ``data
    fetch``) gets a folder's or a factory's loader with no code of its own."""

    def get(self, name: str, role: str | None = None, *, kind: str | None = None) -> Plugin[Loader]:
        if role is None and is_user_dataset(name):
            name = canonical_dataset(name)
            return Plugin(name, _user_loader(name), None, "a user's own dataset")
        return super().get(name, role, kind=kind)


def _user_loader(name: str) -> Loader:
    def load(request: DatasetRequest) -> ImageSet:
        if name.startswith(FOLDER_PREFIX):
            from engine.data.folder import load_folder

            return load_folder(name, request.data_dir)
        from engine.data.module_source import load_module_dataset

        return load_module_dataset(name)

    return load


DATASETS: Registry[Loader] = DatasetRegistry("dataset")

# Where distribution packages put datasets (Debian: /usr/share/datasets/<name>/).
SYSTEM_DATA_DIRS = [Path("/usr/share/datasets")]

FASHION_CLASSES = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
]
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
DIGITS = [str(d) for d in range(10)]

AUTO_ORDER = ("mnist", "fashion-mnist")
IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # torchvision's folder names


def default_data_dir() -> Path:
    """$WMTUI_DATA_DIR, else the platform cache directory (what ``--data-dir`` defaults to)."""
    env = os.environ.get("WMTUI_DATA_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("wmtui")) / "data"


def _idx_candidates(data_dir: Path, name: str, torchvision_folder: str) -> list[Path]:
    return [
        data_dir / name,
        data_dir / torchvision_folder / "raw",
        *(base / name for base in SYSTEM_DATA_DIRS),
    ]


def _idx_dataset(name: str, torchvision_cls: str, classes: list[str]) -> Loader:
    folder = IDX_FOLDERS[name]

    def load(request: DatasetRequest) -> ImageSet:
        candidates = _idx_candidates(request.data_dir, name, folder)
        found = find_idx_dir(candidates, train=request.train)
        if found is None and request.download:
            _torchvision_download(name, torchvision_cls, request.data_dir)
            found = find_idx_dir(candidates, train=request.train)
        if found is None:
            raise DataError(_missing_message(name, request.data_dir))
        parts = _unpacked_idx(name, found, request)
        return ImageSet(name=name, classes=classes, source=str(found), **parts)

    load.__doc__ = f"{name}, 28x28 grey, 10 classes (IDX files)."
    return load


def _unpacked_idx(name: str, folder: Path, request: DatasetRequest) -> dict[str, torch.Tensor]:
    """The four tensors, from a decompressed copy in the cache when the files are gzipped.

    Gunzipping Fashion-MNIST takes 0.28 s, a tenth of the playground's start-up; the copy
    (safetensors) loads in about 0.01 s. It is keyed by the files' paths,
    sizes and modification times, so a replaced or damaged file is read afresh. A test-split
    load reads its two small files directly and never touches the copy, which holds the
    training split too.
    """
    from engine.data.cache import cached  # safetensors: only when a cache is used

    if not request.train:
        return load_idx_dir(folder, train=False)
    files = idx_files(folder)
    if not any(f.suffix == ".gz" for f in files.values()):
        return load_idx_dir(folder)
    stamp = hashlib.sha256()
    for key in IDX_FILES:
        info = files[key].stat()
        stamp.update(f"{files[key].resolve()}|{info.st_size}|{info.st_mtime_ns}".encode())
    cache = request.data_dir / "wmtui-cache" / f"{name}-idx-{stamp.hexdigest()[:16]}.safetensors"
    return cached(cache, lambda: load_idx_dir(folder))


def _missing_message(name: str, data_dir: Path) -> str:
    hint = " or install Debian's dataset-fashion-mnist package" if name == "fashion-mnist" else ""
    return (
        f"dataset {name!r} is not in {data_dir}; run `wmtui data fetch {name}` while online"
        f"{hint}, or pass --data-dir where it lives"
    )


def _torchvision_download(name: str, cls_name: str, data_dir: Path, **kwargs: object) -> object:
    """Let torchvision fetch the files; being offline becomes a DataError naming the fix."""
    import torchvision.datasets as tvd

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return getattr(tvd, cls_name)(root=str(data_dir), download=True, **kwargs)
    except Exception as exc:  # torchvision raises URLError, RuntimeError, OSError...
        raise DataError(f"could not download {name!r} into {data_dir}: {exc}") from None


def _torchvision_set(name: str, request: DatasetRequest, cls_name: str, **kwargs: object) -> object:
    import torchvision.datasets as tvd

    try:
        return getattr(tvd, cls_name)(root=str(request.data_dir), download=False, **kwargs)
    except (RuntimeError, OSError) as exc:
        if not request.download:
            raise DataError(_missing_message(name, request.data_dir)) from exc
    return _torchvision_download(name, cls_name, request.data_dir, **kwargs)


def _hwc_to_chw(array: object) -> torch.Tensor:
    return torch.as_tensor(array).permute(0, 3, 1, 2).contiguous()


DATASETS.register("mnist")(_idx_dataset("mnist", "MNIST", DIGITS))
DATASETS.register("fashion-mnist")(_idx_dataset("fashion-mnist", "FashionMNIST", FASHION_CLASSES))


def _cifar(name: str, cls_name: str) -> Loader:
    def load(request: DatasetRequest) -> ImageSet:
        test = _torchvision_set(name, request, cls_name, train=False)
        train = _torchvision_set(name, request, cls_name, train=True) if request.train else test
        cut = None if request.train else 0
        return ImageSet(
            name,
            _hwc_to_chw(train.data)[:cut],
            torch.tensor(train.targets)[:cut],
            _hwc_to_chw(test.data),
            torch.tensor(test.targets),
            list(train.classes),
            source=str(request.data_dir),
        )

    load.__doc__ = f"{cls_name}, 32x32 RGB, {cls_name[5:]} classes."
    return load


DATASETS.register("cifar10")(_cifar("cifar10", "CIFAR10"))
DATASETS.register("cifar100")(_cifar("cifar100", "CIFAR100"))


@DATASETS.register("svhn")
def load_svhn(request: DatasetRequest) -> ImageSet:
    """SVHN house numbers, 32x32 RGB, 10 classes."""
    test = _torchvision_set("svhn", request, "SVHN", split="test")
    train = _torchvision_set("svhn", request, "SVHN", split="train") if request.train else test
    cut = None if request.train else 0
    return ImageSet(
        "svhn",
        torch.as_tensor(train.data)[:cut],
        torch.as_tensor(train.labels).long()[:cut],
        torch.as_tensor(test.data),
        torch.as_tensor(test.labels).long(),
        DIGITS,
        source=str(request.data_dir),
    )


def _resize_images(images: list[object], size: int) -> torch.Tensor:
    """PIL images of any size -> uint8 [N,3,size,size]; done once at load, then cached."""
    import numpy as np

    return (
        torch.from_numpy(
            np.stack([np.asarray(img.convert("RGB").resize((size, size))) for img in images])
        )
        .permute(0, 3, 1, 2)
        .contiguous()
    )


@DATASETS.register("gtsrb")
def load_gtsrb(request: DatasetRequest) -> ImageSet:
    """German traffic signs, resized to 32x32 RGB, 43 classes."""
    from PIL import Image

    from engine.data.cache import cached

    def build() -> dict[str, torch.Tensor]:
        parts = {}
        for split, prefix in (("train", "train"), ("test", "test")):
            ds = _torchvision_set("gtsrb", request, "GTSRB", split=split)
            samples = ds._samples
            parts[f"{prefix}_x"] = _resize_images([Image.open(p) for p, _ in samples], 32)
            parts[f"{prefix}_y"] = torch.tensor([label for _, label in samples])
        return parts

    parts = cached(request.data_dir / "wmtui-cache" / "gtsrb-32.safetensors", build)
    return ImageSet(
        "gtsrb", classes=[str(i) for i in range(43)], source=str(request.data_dir), **parts
    )


@DATASETS.register("stl10-unlabeled")
def load_stl10_unlabeled(request: DatasetRequest) -> ImageSet:
    """STL-10's 100k unlabelled images at 32x32: an unlabelled source for FTAU."""
    from engine.data.cache import cached

    def build() -> dict[str, torch.Tensor]:
        ds = _torchvision_set("stl10-unlabeled", request, "STL10", split="unlabeled")
        x = torch.as_tensor(ds.data)
        small = (
            torch.nn.functional.interpolate(x.float(), size=32, mode="area").round().to(torch.uint8)
        )
        empty = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
        return {
            "train_x": small,
            "train_y": torch.full((len(small),), -1),
            "test_x": empty,
            "test_y": torch.zeros(0, dtype=torch.long),
        }

    parts = cached(request.data_dir / "wmtui-cache" / "stl10-unlabeled-32.safetensors", build)
    return ImageSet(
        "stl10-unlabeled", classes=CIFAR10_CLASSES, source=str(request.data_dir), **parts
    )


def is_present(name: str, data_dir: Path) -> bool:
    """Whether a dataset loads without downloading (used by ``auto`` and ``data list``)."""
    try:
        DATASETS.get(name).factory(DatasetRequest(data_dir, train_size=1, test_size=1))
    except DataError:
        return False
    return True


def require_dataset(name: str, data_dir: Path, *, train: bool = True) -> None:
    """Raise the loader's own DataError when ``name`` is not available offline: a job is
    refused before its run folder exists. ``auto`` always resolves and ``synthetic`` is
    rendered, so neither is looked for (looking would render and cache images). Without
    ``train`` only the test split has to be there."""
    if name in ("auto", "synthetic"):
        return
    DATASETS.get(name).factory(DatasetRequest(data_dir, train_size=1, test_size=1, train=train))


def resolve_auto(data_dir: Path, *, train: bool = True) -> tuple[str, str]:
    """Pick a dataset for ``auto`` and say why, so the user never wonders what ran."""
    for name in AUTO_ORDER:
        found = find_idx_dir(_idx_candidates(data_dir, name, IDX_FOLDERS[name]), train=train)
        if found is not None:
            return name, f"auto: found {name} in {found}"
    places = ", ".join(str(p) for p in [data_dir, *SYSTEM_DATA_DIRS])
    return "synthetic", f"auto: no mnist or fashion-mnist in {places}; using synthetic (offline)"
