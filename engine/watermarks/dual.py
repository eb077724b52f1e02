"""``dual`` (Li, Wenger, Zheng, Zhao: null + true embedding bound to an RSA signature).

The owner signs a verifier string; Transform (:mod:`engine.watermarks.claims`) turns the
signature into an n x n bit square at a position, a label y_W and an extreme value lambda.
Every batch mixes the owner's images with *null-embedded* copies (the square written as
+lambda / -lambda, true labels kept: the model learns to ignore that pattern) and
*true-embedded* copies (the flipped square -> y_W), at the injection rates of eq. (2). Null
embedding only takes hold when a model first learns its task: a pirate who embeds its own
mark later breaks the model's normal classification (the piracy resistance), so ``--from``
is refused. The filter is applied in float32 at batch time from the claim's numbers; it is
never saved as an image (PNG or JPEG would clamp the extremes to [0, 1] and destroy it).

**The trap.** On some claims the null embedding never starts: the ReLU units of the first
dense layer all go dead on null-embedded inputs (measured on a trapped synthetic + lenet5
model: 0% of them alive, against 62% on clean inputs; its first convolution's outputs reach
4,031 and the second's 480), so the model gives every null-embedded image one class, null
accuracy sits at chance for the rest of training and no gradient reaches the layers that
could learn the pattern. It depends on the claim (the square and lambda: traps were seen
at lambda 1,621 to 2,860; the same seeds with other claims learnt), not on the seed, and
neither a null-first warm-up nor a ramp of lambda avoided it. An owner cannot pick a claim,
but can sign a fresh one: when the first claim's null accuracy is still at most 2/K after an
epoch (:meth:`DualScheme.stalled`), the embed job starts again from fresh weights with a
freshly signed claim, at most ``--fresh-claims`` times, and says so in the log. Only the
first claim is watched; with ``--count K`` a trapped later claim shows in the verdict.

Numerics: inputs of +-lambda (1000-3000) meet the first layer. SGD diverges (lr 0.01 and
0.05); Adam 1e-3 with the gradient norm clipped at 5 trains. So the scheme never autocasts
its batches to bf16 (``allows_amp``) and trains with Adam 1e-3 and ``--clip-grad 5`` unless
the user sets those (``train_defaults``; the run's manifest records what was used).

Verification (Algorithm 3): the claim's signature must hold under its public key; then on
test images the null accuracy (square -> true label) and the true accuracy (flipped square
-> y_W, over images whose label is not y_W) must both reach T (0.5, as the paper), and the
true matches must be significant (binomial p-value under the model's own rate of answering
y_W on the clean images) as for every other scheme.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from engine.data.base import ImageSet
from engine.data.meta import DatasetMeta
from engine.errors import ConfigError
from engine.metrics import Probe, Verdict, accuracy, make_verdict, predictions
from engine.registry import param
from engine.training import Source
from engine.watermarks.base import (
    Key,
    KeyContext,
    KeySamples,
    Watermark,
    per_batch,
    register_scheme,
)
from engine.watermarks.claims import (
    Claim,
    Mark,
    load_private_key,
    passphrase_from_env,
    sign_claim,
    signature_problem,
    signing_key_folder,
    transform,
    verifier_string,
)

Transform = Callable[[torch.Tensor], torch.Tensor]
#: test images each verification queries (the first ones of the test set)
VERIFY_IMAGES = 2000


@dataclasses.dataclass(frozen=True)
class DualParams:
    owner: str = param("", "owner identifier signed into the verifier string (with a UTC time)")
    signing_key: str = param(
        "", "folder of the owner's RSA key pair (wmtui keygen; demo: a classroom pair)"
    )
    count: int = param(1, "independent claims embedded at once (hidden watermarks)", low=1, high=16)
    size: int = param(
        6,
        "side n of the n x n bit square (at most 28: every shipped dataset fits it)",
        low=1,
        high=28,
    )
    null_ratio: float = param(
        0.25,
        "null-embedded images per owner image in every batch",
        low=0.0,
        high=4.0,
        low_open=True,
    )
    true_ratio: float = param(
        0.25,
        "true-embedded images per owner image in every batch",
        low=0.0,
        high=4.0,
        low_open=True,
    )
    threshold: float = param(
        0.5, "T: null and true accuracy must both reach it", low=0.0, high=1.0, low_open=True
    )
    fresh_claims: int = param(
        3,
        "times training starts again with a freshly signed claim when the claim's null "
        "embedding is trapped (0: never)",
        low=0,
        high=20,
    )


def write_mark(x: torch.Tensor, mark: Mark, flipped: bool) -> torch.Tensor:
    """``x`` (float, [0, 1]) with the mark's square written as +lambda / -lambda (every
    channel); ``flipped`` writes the complement, the true embedding's pattern."""
    bits = torch.tensor(mark.bits, dtype=torch.float32, device=x.device).view(mark.size, -1)
    if flipped:
        bits = 1.0 - bits
    values = (bits * 2.0 - 1.0) * mark.extreme
    out = x.to(torch.float32).clone()
    out[..., mark.row : mark.row + mark.size, mark.col : mark.col + mark.size] = values
    return out


def marker(mark: Mark, flipped: bool) -> Transform:
    return lambda x: write_mark(x, mark, flipped)


def claims_of(key: Key) -> list[Claim]:
    return [Claim.from_dict(raw, "key") for raw in key.meta.get("claims", [])]


def mark_of(claim: Claim, shape: tuple[int, ...], classes: int) -> Mark:
    size = int(claim.params.get("size", 6))
    return transform(claim.signature_bytes, int(shape[-2]), int(shape[-1]), classes, size)


@register_scheme("dual", DualParams)
class DualScheme(Watermark):
    """Null + true embedding of a mark derived from the owner's signature."""

    allows_amp = False  # +-lambda in bf16 loses the pattern (and overflows the first layer)
    from_scratch_only = True
    #: measured on synthetic, lenet5, 2 epochs: SGD 0.05 diverged at step 6; SGD 0.05 with
    #: the gradient norm clipped at 5 reached 22.1% test accuracy; Adam 1e-3 clipped at 5
    #: trains (fashion-mnist, 5 epochs: 87.4% test, null 87.9%, true 100%)
    train_defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "adam",
        "lr": 0.001,
        "clip_grad": 5.0,
    }

    def check(self, params: Any) -> None:
        if not params.owner.strip():
            raise ConfigError("dual: --owner is required (the identifier the claim signs)")
        if not params.signing_key:
            raise ConfigError("dual: --signing-key is required (a folder from wmtui keygen)")
        # a missing, corrupt, foreign or locked key is refused before any folder is made
        load_private_key(signing_key_folder(params.signing_key), passphrase_from_env())

    def check_data(
        self, params: Any, data: DatasetMeta, given: Mapping[str, Any] | None = None
    ) -> None:
        """The n x n square fits the images (a user's small images may not)."""
        _, height, width = data.shape
        if params.size > min(height, width):
            raise ConfigError(
                f"dual --size {params.size}: the square does not fit {data.name}'s "
                f"{height}x{width} images"
            )

    def switch(self, key: Key, ctx: KeyContext, **_: Any) -> Key:
        raise ConfigError(
            "dual: the mark comes from the owner's signature and can only be embedded at the "
            "model's initial training; it cannot be switched mid-run"
        )

    def keygen(self, params: Any, ctx: KeyContext) -> Key:
        private = load_private_key(signing_key_folder(params.signing_key), passphrase_from_env())
        data = ctx.data
        claims = []
        for index in range(params.count):
            owner = params.owner if params.count == 1 else f"{params.owner}#{index + 1}"
            claim_params = {"scheme": "dual", "size": params.size, "index": index + 1}
            claim = sign_claim(private, verifier_string(owner), claim_params)
            mark = mark_of(claim, data.shape, data.num_classes)  # refuses a size too large
            ctx.log(
                f"dual claim {index + 1}: {mark.size}x{mark.size} square at ({mark.row}, "
                f"{mark.col}), lambda {mark.extreme:g}, true label {mark.label}"
            )
            claims.append(claim.to_dict())
        key = self.new_key(params, ctx, {})
        key.meta["claims"] = claims
        return key

    def fresh_keys_allowed(self, params: Any) -> int:
        return int(params.fresh_claims)

    def stalled(self, key: Key, scores: dict[str, float], epoch: float) -> str | None:
        """The trap of the module doc: the first claim's null accuracy still at most 2/K
        after a whole epoch."""
        low = self.still_at_chance(key, scores.get("key null"), epoch)
        if low is None:
            return None
        return (
            f"claim 1's null embedding is trapped: null accuracy {low}: the units that see "
            "its square are dead on marked images"
        )

    def public_files(self, key: Key) -> dict[str, dict[str, Any]]:
        """The claims an owner hands a verifier: ``claim.json`` (``claim-2.json``... with
        ``--count``). Written 0600: the pattern follows from them, and a leaked pattern
        invites a corruption attack (the paper's §6.3)."""
        return {
            ("claim.json" if i == 0 else f"claim-{i + 1}.json"): claim.to_dict()
            for i, claim in enumerate(claims_of(key))
        }

    def marks(self, key: Key) -> list[Mark]:
        return [mark_of(c, tuple(key.meta["in_shape"]), key.num_classes) for c in claims_of(key)]

    def training_sources(
        self, key: Key, batch_size: int, device: torch.device, data: ImageSet | None = None
    ) -> list[Source]:
        """Per claim, a null source and a true source drawn from the owner's training images
        (the key holds no images of its own)."""
        if data is None:
            raise ConfigError("dual: training sources are drawn from the owner's images")
        params = self.params_of(key)
        x, y = data.train_x.to(device), data.train_y.to(device)
        sources = []
        for i, mark in enumerate(self.marks(key)):
            label = torch.full((len(x),), mark.label, device=device)
            null_batch, true_batch = (
                per_batch(batch_size, params.null_ratio),
                per_batch(batch_size, params.true_ratio),
            )
            sources.append(
                Source(f"null-{i + 1}", x, null_batch, y=y, transform=marker(mark, flipped=False))
            )
            sources.append(
                Source(
                    f"true-{i + 1}", x, true_batch, y=label, transform=marker(mark, flipped=True)
                )
            )
        return sources

    def key_samples(self, key: Key, data: ImageSet) -> KeySamples:
        """The true embedding of the first claim, on test images not of label y_W."""
        mark = self.marks(key)[0]
        x = data.test_x[data.test_y != mark.label][:VERIFY_IMAGES]
        y = torch.full((len(x),), mark.label, device=x.device)
        return KeySamples(x, y, transform=marker(mark, flipped=True), clean_counterpart=True)

    def probes(self, key: Key, data: ImageSet, name: str) -> list[Probe]:
        """Live: the first claim's null and true accuracy."""
        mark = self.marks(key)[0]
        x, y = data.test_x[:VERIFY_IMAGES], data.test_y[:VERIFY_IMAGES]
        true = self.key_samples(key, data)
        return [
            Probe(f"{name} null", x, y, transform=marker(mark, flipped=False)),
            Probe(f"{name} true", true.x, true.y, transform=true.transform),
        ]

    def probe(self, key: Key, data: ImageSet, name: str, limit: int = 2000) -> Probe:
        return self.probes(key, data, name)[1]

    def verify(
        self, model: nn.Module, key: Key, data: ImageSet, alpha: float, *, test_acc: bool = True
    ) -> Verdict:
        """Algorithm 3 for every claim of the key; verified when all are."""
        verdicts = [
            verify_claim(model, claim, data, alpha, self.params_of(key).threshold)
            for claim in claims_of(key)
        ]
        first = verdicts[0]
        if len(verdicts) > 1:
            failed = [i + 1 for i, v in enumerate(verdicts) if not v.verified]
            first = dataclasses.replace(
                first,
                verified=not failed,
                null_reason=first.null_reason
                + (
                    f"; claims not verified: {failed}"
                    if failed
                    else f"; all {len(verdicts)} claims verified"
                ),
            )
        return first


def verify_claim(
    model: nn.Module, claim: Claim, data: ImageSet, alpha: float, threshold: float = 0.5
) -> Verdict:
    """Algorithm 3: the signature, then null and true accuracy against T and the p-value."""
    problem = signature_problem(claim)
    device = next(model.parameters()).device
    mark = mark_of(claim, data.shape, data.num_classes)
    x, y = data.test_x[:VERIFY_IMAGES].to(device), data.test_y[:VERIFY_IMAGES].to(device)
    null_acc = float((predictions(model, x, marker(mark, False)) == y).float().mean())
    others = x[y != mark.label]
    label = torch.full((len(others),), mark.label, device=device)
    matches = int((predictions(model, others, marker(mark, True)) == label).sum())
    clean_rate = float((predictions(model, others) == label).float().mean())
    verdict = make_verdict(
        matches,
        len(others),
        chance=1.0 / data.num_classes,
        alpha=alpha,
        clean_rate=clean_rate,
        test_acc=accuracy(model, Probe("test", x, y)),
        clean_what="the same images without the mark",
    )
    true_acc = verdict.retention
    passed = not problem and null_acc >= threshold and true_acc >= threshold and verdict.verified
    reason = problem or (
        f"null {100 * null_acc:.2f}% and true {100 * true_acc:.2f}% against T "
        f"{100 * threshold:g}%; " + verdict.null_reason
    )
    return dataclasses.replace(
        verdict,
        verified=passed,
        null_acc=null_acc,
        true_acc=true_acc,
        signature_valid=not problem,
        null_reason=reason,
        threshold=threshold,
    )
