"""``dawn`` (Szyller, Atli, Marchal, Asokan, "DAWN: Dynamic Adversarial Watermarking of Neural
Networks", ACM MM 2021; WRT ``wrt/defenses/watermark/dawn.py``, ``configs/cifar10/
wm_configs/dawn1.yaml``, ``configs/cifar10/decision_threshold/dawn2.yaml``): a watermark
of the API, not of the weights.

Embedding trains nothing: ``wmtui embed --scheme dawn --from RUN`` serves RUN's model behind
the ``dawn`` answer filter (:mod:`engine.filters.dawn`), which answers a keyed fraction of
queries (0.5%) with a wrong label and remembers them. The key holds the secret (32 random
bytes, never derived from the run's seed, which the manifest records) and the held-out test
images the API answers wrongly with those answers: the API's own watermark, 100% by
construction. A study that must rerun to the same numbers (a recipe's regression records)
sets ``secret_seed``: the secret is then derived from it and the run's seed. A thief's
model is verified on what the API remembered of that thief: after an
extraction attack the referee writes those queries and answers as a key into the stolen run
(:meth:`Dawn.thief_key`), so ``wmtui verify --run STOLEN`` asks the stolen model them.

The null is exact rather than measured: the wrong label is the prediction plus a keyed
offset uniform over the K-1 others, independent of the image, so a model that never saw the
API's answers matches it with probability at most 1/(K-1), whatever it predicts. The SoK's
threshold (``wmtui threshold --scheme dawn``) scores null models on a fresh secret's chosen
test images, labelled as another null model served by DAWN answers them (a key made without
a model, as ``fresh-keys`` makes one, takes the true label for the prediction). WRT verifies
with ``wm_acc > 0``; we keep the binomial test.
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar

import torch
from torch import nn

from engine.data.base import ImageSet
from engine.deploy import Deployed
from engine.errors import RunError
from engine.filters.dawn import (
    SECRET_BYTES,
    SECRET_TENSOR,
    DawnFilter,
    DawnParams,
    chosen,
    digests,
    study_secret,
    wrong_labels,
)
from engine.metrics import Probe, Verdict, accuracy, make_verdict, predictions
from engine.training import Source
from engine.watermarks.base import Key, KeyContext, KeySamples, Watermark, register_scheme

#: ``meta["dawn"]``: the API's own key (secret + held-out answers), or a thief's remembered set
API, THIEF = "api", "thief"


@register_scheme("dawn", DawnParams)
class Dawn(Watermark):
    """The owner's API answers a keyed fraction of queries wrongly; a thief's model that
    learnt them is verified on the ones it asked."""

    #: embedding serves the model behind the filter instead of training it
    served: ClassVar[bool] = True
    needs_trained_model: ClassVar[bool] = True

    def keygen(self, params: DawnParams, ctx: KeyContext) -> Key:
        secret = (
            study_secret(params.secret_seed, ctx.seed)
            if params.secret_seed >= 0
            else secrets.token_bytes(SECRET_BYTES)
        )
        data = ctx.data
        images = data.test_x.cpu()
        macs = digests(secret, images)
        rows = chosen(macs, params.fraction).nonzero().flatten()
        picked = [macs[i] for i in rows.tolist()]
        x = images[rows]
        if ctx.trained_model is not None:  # what the served model predicts, hence answers
            device = next(ctx.trained_model.parameters()).device
            predicted = predictions(ctx.trained_model, x.to(device)).cpu()
        else:  # no model (fresh-keys): the API's answer wherever its model is right
            predicted = data.test_y.cpu()[rows]
        y = wrong_labels(predicted, picked, data.num_classes)
        ctx.log(f"dawn: {len(x)} of {len(images)} test images answered wrongly by the API")
        tensors = {
            SECRET_TENSOR: torch.tensor(list(secret), dtype=torch.uint8),
            "x": x.contiguous(),
            "y": y,
        }
        key = self.new_key(params, ctx, tensors)
        key.meta["dawn"] = API
        return key

    def serve(self, model: nn.Module, key: Key) -> Deployed:
        """``model`` behind the API filter holding ``key``'s secret."""
        secret = bytes(key.tensor(SECRET_TENSOR).tolist())
        return Deployed.wrap(model, filters=[DawnFilter(self.params_of(key), secret)])

    def thief_key(self, owner: Key, images: torch.Tensor, labels: torch.Tensor) -> Key:
        """The owner's watermark for one thief: the queries the API answered wrongly and its
        answers (no secret: the stolen run never holds it)."""
        meta = {**owner.meta, "dawn": THIEF, "queries": len(labels)}
        tensors = {"x": images.cpu().contiguous(), "y": labels.cpu().long()}
        return Key(self.name, dict(owner.params), meta, tensors)

    def training_sources(
        self, key: Key, batch_size: int, device: torch.device, data: ImageSet | None = None
    ) -> list[Source]:
        return []  # the API marks the thief's training set, not the owner's

    def key_samples(self, key: Key, data: ImageSet) -> KeySamples:
        device = data.test_x.device
        return KeySamples(key.tensor("x", device), key.tensor("y", device))

    def probes(self, key: Key, data: ImageSet, name: str) -> list[Any]:
        """No probe when the key holds no query (a tiny test set the API chose none of)."""
        return [self.probe(key, data, name)] if len(key.tensors["y"]) else []

    def verify(
        self, model: nn.Module, key: Key, data: ImageSet, alpha: float, *, test_acc: bool = True
    ) -> Verdict:
        """Matches of the API's wrong answers, against chance 1/(K-1) (module docstring)."""
        samples = self.key_samples(key, data)
        if len(samples.y) == 0:
            raise RunError("this dawn key holds no query answered wrongly: nothing to verify")
        device = next(model.parameters()).device
        hits = predictions(model, samples.x.to(device)) == samples.y.to(device)
        test = Probe(
            "test", data.test_x.to(device), data.test_y.to(device), classes=key.num_classes
        )
        return make_verdict(
            int(hits.sum()),
            len(samples.y),
            chance=1.0 / max(1, key.num_outputs - 1),
            alpha=alpha,
            test_acc=accuracy(model, test) if test_acc else None,
        )
