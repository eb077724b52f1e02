"""``dawn``: the owner's API answers a keyed fraction of queries wrongly, and remembers them.

DAWN (Szyller, Atli, Marchal, Asokan, "DAWN: Dynamic Adversarial Watermarking of Neural
Networks", ACM MM 2021; WRT ``wrt/defenses/watermark/dawn.py``) marks no weights: the
owner's server decides per query, from an HMAC of the input under a secret, whether to answer
it wrongly, and keeps those queries with the wrong answers. A thief who trains on the API's
answers learns them; the owner later asks the thief's model those queries and finds its own
mistakes. The decision depends on nothing but the secret and the query, so the same image is
always answered the same way (a thief cannot average the mark away by asking twice).

Ours hashes the query as the uint8 image the client sent (the float input rounded back to
bytes), where WRT hashes a median-thresholded embedding of it: a byte-exact repeat is what an
API sees, and the owner can recompute a decision from the image alone. The first 8 bytes of
the HMAC-SHA256 digest decide (below ``fraction`` of 2^64), the next 8 pick an offset in
1..K-1 added to the served prediction, so the wrong label is never the prediction and
carries no information about the image. The answer swaps the two logits: the probabilities
the thief sees keep their shape (WRT shuffles the top ones for the same reason).

The secret lives in the run's 0600 ``key/`` folder and is read in :meth:`DawnFilter.bind`;
``deploy.json`` records only the fraction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.errors import RunError
from engine.filters.registry import AnswerFilter, register_filter
from engine.io import load_tensors
from engine.registry import param

#: the run folder holding the owner's secret (the watermark key folder, mode 0600)
SECRET_FOLDER = "key"
#: its tensors file and the secret's name in it
SECRET_FILE = "key.safetensors"
SECRET_TENSOR = "secret"
#: bytes of a fresh secret (HMAC-SHA256's block-size key)
SECRET_BYTES = 32
_SPAN = 2**64


@dataclasses.dataclass(frozen=True)
class DawnParams:
    """The share of queries answered wrongly. The paper's default is 0.5% (Szyller et al.,
    Section 5); WRT's ``configs/cifar10/wm_configs/dawn1.yaml`` writes ``rate: 0.05``, which
    its ``Dawn`` constructor never reads (it takes ``ratio``, default 1%)."""

    fraction: float = param(
        0.005,
        "share of queries the API answers with a wrong label (and remembers)",
        low=0.0,
        high=0.5,
        low_open=True,
    )
    secret_seed: int = param(
        -1,
        "-1: a random secret, as a real API must have; N >= 0: the secret derived from N and "
        "the run's seed, so a study reruns to the same numbers (whoever knows both can "
        "recompute it: never for a deployed API)",
        low=-1,
    )


def study_secret(secret_seed: int, seed: int) -> bytes:
    """The reproducible secret of ``secret_seed`` >= 0 for a run of ``seed``: a hash, so two
    seeds give unrelated secrets."""
    text = f"wmtui-dawn-secret:{secret_seed}:{seed}".encode()
    return hashlib.sha256(text).digest()[:SECRET_BYTES]


def as_bytes(x: torch.Tensor) -> torch.Tensor:
    """Float queries in [0, 1] as the uint8 images a client sent, on the CPU, C-contiguous
    (channels-last batches hash as the same bytes)."""
    if x.dtype == torch.uint8:
        return x.detach().cpu().contiguous()
    scaled = (x.detach().float() * 255.0).round_().clamp_(0, 255)
    return scaled.to(torch.uint8).cpu().contiguous()


def digests(secret: bytes, images: torch.Tensor) -> list[bytes]:
    """HMAC-SHA256 of each uint8 image's bytes under ``secret``."""
    flat = images.reshape(len(images), -1).numpy()
    return [hmac.new(secret, row.tobytes(), hashlib.sha256).digest() for row in flat]


def chosen(macs: list[bytes], fraction: float) -> torch.Tensor:
    """Which queries are answered wrongly: the digest's first 8 bytes below ``fraction``."""
    bound = int(fraction * _SPAN)
    return torch.tensor([int.from_bytes(m[:8], "little") < bound for m in macs], dtype=torch.bool)


def offsets(macs: list[bytes], classes: int) -> torch.Tensor:
    """Each query's keyed offset in 1..classes-1 from the prediction to the wrong label."""
    return torch.tensor(
        [1 + int.from_bytes(m[8:16], "little") % (classes - 1) for m in macs], dtype=torch.long
    )


def wrong_labels(predicted: torch.Tensor, macs: list[bytes], classes: int) -> torch.Tensor:
    """The label the API answers instead of ``predicted`` (never ``predicted`` itself)."""
    return (predicted.cpu() + offsets(macs, classes)) % classes


class QueryLog:
    """The queries the API answered wrongly, by digest, with their wrong labels.

    An attack asks a deep copy of the suspect (``frozen_copy``), so every copy of a filter
    shares its owner's log: ``deepcopy`` hands back the same object. Only queries asked while
    :meth:`recording` are kept: the referee records the thief's, not its own measurements.
    """

    def __init__(self) -> None:
        self.active = False
        self._kept: dict[bytes, tuple[torch.Tensor, int]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> QueryLog:
        return self

    def __len__(self) -> int:
        return len(self._kept)

    @contextlib.contextmanager
    def recording(self) -> Iterator[QueryLog]:
        """Keep the queries asked inside the block (cleared first: one thief at a time)."""
        self._kept.clear()
        self.active = True
        try:
            yield self
        finally:
            self.active = False

    def keep(self, macs: list[bytes], images: torch.Tensor, labels: torch.Tensor) -> None:
        for mac, image, label in zip(macs, images, labels.tolist(), strict=True):
            self._kept.setdefault(mac, (image.clone(), int(label)))

    def remembered(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(uint8 images, wrong labels)`` in the order first asked."""
        if not self._kept:
            return torch.zeros((0,), dtype=torch.uint8), torch.zeros((0,), dtype=torch.long)
        images, labels = zip(*self._kept.values(), strict=True)
        return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def read_secret(folder: Path) -> bytes:
    """The owner's secret from ``folder/key`` (a run's 0600 key folder)."""
    path = folder / SECRET_FOLDER / SECRET_FILE
    if not path.is_file():
        raise RunError(f"the dawn filter's secret is missing: {path} (the owner's key folder)")
    tensors = load_tensors(path, "dawn key")
    secret = tensors.get(SECRET_TENSOR)
    if secret is None or secret.dtype != torch.uint8 or secret.numel() != SECRET_BYTES:
        raise RunError(f"{path} holds no {SECRET_BYTES}-byte dawn secret")
    return bytes(secret.tolist())


@register_filter("dawn", DawnParams)
class DawnFilter(AnswerFilter):
    """The owner's API: a keyed fraction of queries answered with another class, kept."""

    def __init__(self, params: DawnParams, secret: bytes | None = None) -> None:
        super().__init__(params)
        self.secret = secret
        self.log = QueryLog()

    def bind(self, folder: Path) -> None:
        self.secret = read_secret(folder)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, logits: torch.Tensor, inner: nn.Module
    ) -> torch.Tensor:
        if self.secret is None:
            raise RunError("the dawn filter was never given its secret (load the run folder)")
        if logits.shape[1] < 2 or len(x) == 0:
            return logits
        images = as_bytes(x)
        macs = digests(self.secret, images)
        rows = chosen(macs, self.params.fraction).nonzero().flatten()
        if len(rows) == 0:
            return logits
        picked = [macs[i] for i in rows.tolist()]
        predicted = logits[rows.to(logits.device)].argmax(1)
        wrong = wrong_labels(predicted, picked, logits.shape[1])
        if self.log.active:
            self.log.keep(picked, images[rows], wrong)
        answered = logits.clone()
        at = rows.to(logits.device)
        wrong = wrong.to(logits.device)
        answered[at, predicted] = logits[at, wrong]
        answered[at, wrong] = logits[at, predicted]
        return answered


def recording(model: nn.Module) -> contextlib.AbstractContextManager[Any]:
    """Record what ``model``'s DAWN filters are asked inside the block (nothing without)."""
    stack = contextlib.ExitStack()
    for log in query_logs(model):
        stack.enter_context(log.recording())
    return stack


def query_logs(model: nn.Module) -> list[QueryLog]:
    """The logs of the DAWN filters ``model`` is served behind."""
    return [f.log for f in getattr(model, "filters", ()) if isinstance(f, DawnFilter)]
