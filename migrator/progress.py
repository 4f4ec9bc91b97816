"""What a DBA sees: the progress bar of ``start`` and the text of ``status`` (pure rendering)."""
from __future__ import annotations

import logging
import time
from typing import Any, TextIO


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def bar(fraction: float, width: int = 24) -> str:
    fraction = max(0.0, min(1.0, fraction))
    full = int(fraction * width)
    return "[" + "#" * full + "." * (width - full) + "]"


def progress_line(stats: Any) -> str:
    """One line for the progress bar, from a migration's Stats."""
    lag = f"lag {stats.lag_seconds:.1f} s"
    if stats.phase == "copying":
        total = stats.total_rows or 0
        fraction = stats.rows_copied / total if total else 0.0
        remaining = max(0, total - stats.rows_copied)
        eta = remaining / stats.rows_per_s if stats.rows_per_s > 0 else None
        line = (f"copy {bar(fraction)} {100 * fraction:5.1f}% {stats.rows_copied:,}/{total:,} rows "
                f"{stats.rows_per_s:,.0f} rows/s ETA {human_duration(eta)} {lag}")
    elif stats.phase in ("streaming", "reverse"):
        direction = "source -> shards" if stats.phase == "streaming" else "shards -> source"
        line = (f"{direction}: {stats.events_per_s:,.0f} events/s, {stats.events_applied:,} applied, {lag}, "
                f"{stats.lag_events} pending")
    else:
        line = stats.phase
    if stats.throttled:
        line += f" [throttled: {stats.throttled}]"
    return line


class Progress:
    """A single redrawn line on a terminal; without one, a log line every ``log_every`` seconds (daemon logs)."""

    def __init__(self, stream: TextIO, enabled: bool, log_every: float | None = None):
        self.stream = stream
        self.enabled = enabled
        self.log_every = log_every
        self._logged = 0.0
        self._shown = False

    def update(self, stats: Any) -> None:
        if self.enabled:
            self.line(progress_line(stats))
        elif self.log_every is not None and time.monotonic() - self._logged >= self.log_every:
            self._logged = time.monotonic()
            logging.getLogger("migrator.progress").info("%s", progress_line(stats))

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


class ProgressLogHandler(logging.Filter):
    """Clears the progress line before a log record is printed (attached as a filter)."""

    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.clear()
        return True


def format_status(doc: dict) -> str:
    lines = []
    running = (f"running, pid {doc['pid']} on {doc['host']}" if doc["running"] else
               "not running" + (f" (last heartbeat {doc['heartbeat_age']:.0f} s ago)" if doc.get("heartbeat_age") else ""))
    lines.append(f"{doc['migration']}: {doc['phase']} ({running})")
    lines.append(f"  source:       {doc['source']}")
    lines.append(f"  config:       reads={doc['reads']} writes={doc['writes']}")
    total = doc["rows_total"]
    copied = f"{doc['rows_copied']:,} / {total:,} rows ({doc['percent']:.1f}%)" if total is not None else \
        f"{doc['rows_copied']:,} rows"
    lines.append(f"  copy:         {copied}{', done' if doc['copy_done'] else ''}"
                 + (f", {doc['rows_per_s']:,.0f} rows/s" if doc["running"] and not doc["copy_done"] else ""))
    if doc["running"]:
        direction = "shards -> source" if doc["active"] == "reverse" else "source -> shards"
        lines.append(f"  replication:  {direction}, lag {doc['lag_seconds']:.1f} s, {doc['lag_events']} events pending, "
                     f"{human_bytes(doc['lag_bytes'])} of binlog behind, {doc['events_per_s']:,.0f} events/s")
    else:
        lines.append(f"  replication:  {doc['replication']} (not running: lag unknown)")
    if doc.get("throttled"):
        lines.append(f"  throttled:    {doc['throttled']}")
    for ds, cp in sorted(doc["checkpoints"].items()):
        lines.append(f"  checkpoint:   {ds} at {cp['position']}{' (copy done)' if cp['copy_done'] else ''}")
    for ds, pos in sorted(doc["reverse_checkpoints"].items()):
        lines.append(f"  reverse:      from {ds} at {pos}")
    v = doc.get("last_verify")
    if v:
        age = time.time() - float(v.get("finished_at") or 0)
        if v.get("error"):
            lines.append(f"  last verify:  FAILED {human_duration(age)} ago: {v['error']}")
        else:
            verdict = "ok" if v.get("ok") else f"DIFFERENT ({v.get('mismatched_chunks')} chunks, " \
                                                f"{len(v.get('differences') or [])} keys listed)"
            lines.append(f"  last verify:  {verdict} at {v.get('position')}, {v.get('chunks')} chunks, "
                         f"{v.get('source_rows'):,} rows, {human_duration(age)} ago")
    else:
        lines.append("  last verify:  never")
    if doc.get("error"):
        lines.append(f"  error:        {doc['error']}")
    return "\n".join(lines)
