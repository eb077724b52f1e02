"""The dashboard's header and status lines, in words, from a :class:`DashboardState`.

Pure text (no Textual), so tests read exactly what a person reads; the widgets end a line
that does not fit with "…" (``text-overflow: ellipsis``), so the most telling parts of each
line come first.
"""

from __future__ import annotations

from engine.metrics import percent
from wmtui.tui.state import DashboardState


def title_line(state: DashboardState) -> str:
    """``wmtui · classic 2/2 · GAN scan of … · fashion-mnist · lenet5 · cpu · why``."""
    info = state.info
    where, what = "", state.phase or "-"
    if state.scenario:
        where = f"{state.scenario} {state.phase_index}/{state.phase_total}"
        what = state.phase_title or what
    parts = (
        "wmtui",
        where,
        what,
        info.get("dataset", ""),
        info.get("model", ""),
        info.get("device", ""),
        info.get("dataset_reason", ""),  # last: a narrow terminal cuts it first
    )
    return " · ".join(str(part) for part in parts if part)


def status_line(state: DashboardState) -> str:
    """Training: step (an attack's queries), epoch, learning rate, loss, accuracy, speed. A
    scan: its progress (steps of the search, with an ETA), the scanned model's accuracy and
    the verdict."""
    if state.activity and state.status not in {"completed", "stopped", "failed"}:
        line = f"{state.status.upper()} {state.activity}"  # a wait between readings, in words
    elif is_scan(state):
        line = scan_line(state)
    else:
        total = f"/{state.total_steps}" if state.total_steps else ""
        if state.total_steps and state.step > state.total_steps:
            total = f" (planned {state.total_steps})"  # a data-free run learning its triggers
        lr = f"{state.lr:.3g}" if state.lr is not None else "-"
        loss = f"{state.loss:.4f}" if state.loss is not None else "-"
        speed = f"{state.images_per_s:,.0f}" if state.images_per_s > 0 else "-"
        line = (
            f"{state.status.upper()} step {state.step}{total}{queries_part(state)} "
            f"ep {state.epoch:.2f} lr {lr} loss {loss} acc {percent(state.test_acc)} {speed} img/s"
        )
    if state.error:
        line += f"\nerror: {state.error}"
    return line


def queries_part(state: DashboardState) -> str:
    """`` queries 20,000/20,000``: an attack's answers from the suspect so far and its cap,
    right after the step (a thief's spending is what a narrow terminal must still show);
    nothing for a phase that asked none under no cap (training, a weight attack)."""
    count, cap = state.queries, state.query_cap
    if count is None or (count == 0 and cap <= 0):
        return ""
    return f" queries {count:,}" + (f"/{cap:,}" if cap > 0 else "")


def is_scan(state: DashboardState) -> bool:
    """The running phase is a detector's search (its removal phase trains: not a scan)."""
    detector = state.info.get("detector")
    return detector is not None and state.phase == detector


def scan_line(state: DashboardState) -> str:
    """``RUNNING gan scan step 125/300 · ETA 3m05s · model acc 98.10% · smallest: 7``."""
    if state.scan_steps and state.scan_step:
        progress = f"step {state.scan_step}/{state.scan_steps}"
    elif state.scan_done or not state.scan_steps:  # a recording without steps
        classes = state.info.get("classes") or len(state.scan_sizes) or "?"
        progress = f"{len(state.scan_done)}/{classes} classes done"
    else:
        progress = f"step 0/{state.scan_steps}"
    parts = [f"{state.status.upper()} {state.info.get('detector')} scan {progress}"]
    if state.scan_eta is not None and not state.scan_verdict and state.scan_eta > 0:
        parts.append(f"ETA {duration(state.scan_eta)}")
    parts.append(f"model acc {percent(state.test_acc)}")
    if state.scan_verdict:
        flagged = state.flagged_class
        parts.append(f"flagged class: {'none' if flagged is None else flagged}")
    else:
        smallest = state.scan_outlier()
        parts.append(f"smallest: {'-' if smallest is None else smallest}")  # so far
    return " · ".join(parts)


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``1h02m``: an ETA to read at a glance."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
