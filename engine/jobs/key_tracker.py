"""The keys of one embedding run: the original, mid-run switches, and the trigger preview.

Shared by the embed job and the data-free embedding job, which train differently but save,
switch and show their keys the same way.
"""

from __future__ import annotations

from engine import commands as cmd
from engine.data.base import as_float
from engine.events import TriggerPreview
from engine.metrics import Probe
from engine.runs import KEY_DIR, RunDir, atomic_write_json
from engine.session import JobContext
from engine.training import TrainLoop
from engine.watermarks import Key, KeyContext, Watermark, save_key
from engine.watermarks.base import SECRET_MODE

#: key sets measured at each evaluation: the original and the latest switches
MAX_LIVE_KEYS = 4


class KeyTracker:
    """The keys of one embedding: the original and every mid-run switch.

    ``SetTrigger`` / ``SetTargetLabel`` make a new key from the current one, replace the key
    source of the loop from the next batch on, and add a retention probe, so the stream
    carries retention for the old and the new key sets, named as their folders: ``key``,
    then ``key-2``, ``key-3``... (each switched key is saved there, 0600).
    """

    def __init__(
        self,
        scheme: Watermark,
        kctx: KeyContext,
        run: RunDir | None,
        key: Key,
        source_index: int,
        batch_size: int,
    ) -> None:
        self.scheme, self.kctx, self.run = scheme, kctx, run
        self.keys: dict[str, Key] = {"key": key}
        #: the key sets whose retention the loop still measures (every one stays on disk)
        self.live: list[str] = ["key"]
        self.folders: dict[str, str] = {}
        self.current = key
        self.source_index = source_index
        self.batch_size = batch_size
        self.loop: TrainLoop | None = None
        if run is not None:
            self.folders["key"] = str(save_key(run.path / KEY_DIR, key))
            for name, content in scheme.public_files(key).items():
                atomic_write_json(run.path / name, content, mode=SECRET_MODE)

    def attach(self, loop: TrainLoop, ctx: JobContext) -> None:
        self.loop = loop
        ctx.on(cmd.SetTrigger, lambda c: self.switch(trigger=str(c.trigger)))
        ctx.on(cmd.SetTargetLabel, lambda c: self.switch(target=int(c.label)))

    def _name(self) -> str:
        """The next key set's one name: its folder's (``key-2``), also in the legend, the
        log and the summary's verdicts, so a set is found under the name it is shown by."""
        return f"{KEY_DIR}-{len(self.keys) + 1}"

    def switch(self, *, trigger: str | None = None, target: int | None = None) -> str:
        assert self.loop is not None
        key = self.scheme.switch(self.current, self.kctx, trigger=trigger, target=target)
        if trigger is not None and self.scheme.trigger_field is not None:
            trigger = str(key.params[self.scheme.trigger_field])  # "next" resolved
        name = self._name()
        sources = self.scheme.training_sources(
            key, self.batch_size, self.loop.device, self.kctx.data
        )
        for offset, source in enumerate(sources):  # the key source, then any decoy source
            self.loop.replace_source(self.source_index + offset, source)
        self.loop.probes.append(self.scheme.probe(key, self.kctx.data, name))
        self.keys[name] = key
        self.live.append(name)
        self.current = key
        where = ""
        if self.run is not None:
            folder = save_key(self.run.path / name, key)
            self.folders[name] = str(folder)
            where = f"; saved to {folder}"
        dropped = self._bound_live_keys()
        what = f"trigger {trigger}" if trigger is not None else f"target label {target}"
        # what changed first: at 80 columns the log cuts the end (the folder) first
        return (
            f"embedding {what} as {name} from step {self.loop.step}; tracking "
            f"{', '.join(self.live)}{dropped}{where}"
        )

    def _bound_live_keys(self) -> str:
        """Every evaluation measures every live key set: past :data:`MAX_LIVE_KEYS` the
        oldest switched one stops being measured (the original always stays; its key
        folder stays on disk for ``wmtui verify --key``)."""
        assert self.loop is not None
        if len(self.live) <= MAX_LIVE_KEYS:
            return ""
        oldest = self.live.pop(1)
        self.loop.probes[:] = [p for p in self.loop.probes if p.name != oldest]
        kept = f" (its key stays in {self.folders[oldest]})" if oldest in self.folders else ""
        return f"; no longer tracking {oldest}{kept}"

    def tracked(self) -> dict[str, Key]:
        return {name: self.keys[name] for name in self.live}


def true_trigger_preview(probe: Probe) -> TriggerPreview:
    """One key sample as the model is queried with it (stamped where the scheme stamps), so
    the playground can show the true trigger beside a detector's reversed one."""
    image = as_float(probe.x[:1])
    if probe.transform is not None:
        image = probe.transform(image)
    return TriggerPreview.from_tensor("true trigger", image[0])
