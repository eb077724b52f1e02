"""Export Fashion-MNIST's test split (10,000 images) as PNGs, one folder per class: a real
dataset in the form users bring their own, to check that ``--dataset folder:PATH`` learns what
the IDX files teach.

The images come through our own loader (``load_dataset("fashion-mnist", train=False)``), so
wherever ``wmtui`` finds Fashion-MNIST (Debian's ``dataset-fashion-mnist`` package, or
``wmtui data fetch fashion-mnist``) this finds it too. Nothing is overwritten: the output
folder must not exist yet.

    python benchmarks/export_fashion_pngs.py /tmp/fmnist-png [--data-dir DIR] [--limit N]
    wmtui train --dataset folder:/tmp/fmnist-png --epochs 5 --seed 0 --out runs/fm-png-0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from engine.data import load_dataset
from engine.errors import UserError


def export(out: Path, data_dir: str | None, limit: int = 0) -> dict[str, int]:
    """Write ``out/<class>/<index>.png``; returns the images written per class."""
    if out.exists():
        raise UserError(f"{out} exists; choose a new folder")
    data = load_dataset("fashion-mnist", data_dir, train=False, test_size=limit).data
    counts = dict.fromkeys(data.classes, 0)
    for name in data.classes:
        (out / name).mkdir(parents=True)
    for index, (image, label) in enumerate(zip(data.test_x, data.test_y.tolist(), strict=True)):
        name = data.classes[label]
        Image.fromarray(image[0].numpy()).save(out / name / f"{index:05d}.png")
        counts[name] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to create (one subfolder per class)")
    parser.add_argument("--data-dir", default=None, help="where Fashion-MNIST lives")
    parser.add_argument("--limit", type=int, default=0, help="export only the first N images")
    args = parser.parse_args(argv)
    try:
        counts = export(args.out, args.data_dir, args.limit)
    except UserError as exc:
        print(f"export_fashion_pngs: error: {exc}", file=sys.stderr)
        return 2
    total = sum(counts.values())
    print(f"{total} PNGs in {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
