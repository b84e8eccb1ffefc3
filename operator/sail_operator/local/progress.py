"""Progress of a local run: the trainer's progress lines parsed, shown as bars or plain lines.

The trainer (sail_trainer.logs.Progress) writes, when its output is not a terminal,

    ... sail_trainer.progress: progress phase=generate done=12 total=64 rate=3.1/s

(the format agreed with the trainer engineer; anywhere in the line). `sail run` shows an
overall bar (phases done / total, iteration i/K) and a per-phase bar fed by those lines:
tqdm bars when its output is a terminal, throttled plain lines otherwise (CI logs).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any, TextIO

_PROGRESS = re.compile(
    r"progress phase=(?P<phase>\S+) done=(?P<done>\d+) total=(?P<total>\d+)(?: rate=(?P<rate>[0-9.eE+-]+)/s)?"
)


@dataclass(frozen=True)
class ProgressLine:
    phase: str
    done: int
    total: int
    rate: float | None = None


def parse_progress_line(line: str) -> ProgressLine | None:
    """The progress facts in one output line of a phase process, or None."""
    match = _PROGRESS.search(line)
    if match is None:
        return None
    rate = match.group("rate")
    return ProgressLine(match.group("phase"), int(match.group("done")), int(match.group("total")),
                        float(rate) if rate else None)


def combine_shards(lines: list[ProgressLine], shards: int | None = None) -> ProgressLine | None:
    """One phase bar from the latest line of each shard (sums; rates add up too).

    With `shards` given and some shards not yet reporting (fewer workers than shards), the total
    is extrapolated from the mean of those that did (shards get near-equal slices), so it does not
    grow as shards start. A total of 0 means unknown and stays 0.
    """
    if not lines:
        return None
    rates = [p.rate for p in lines if p.rate is not None]
    total = sum(p.total for p in lines)
    if shards and len(lines) < shards and all(p.total > 0 for p in lines):
        total = round(total / len(lines) * shards)
    return ProgressLine(lines[0].phase, sum(p.done for p in lines), total, sum(rates) if rates else None)


def format_plain(label: str, done: int, total: int, rate: float | None = None) -> str:
    """`label: 12/64 (18%) 3.10/s ETA 0:20`; with an unknown total (0): `label: 12 done 3.10/s`."""
    if total <= 0:
        return f"{label}: {done} done" + (f" {rate:.2f}/s" if rate else "")
    percent = 100 * done // total
    tail = " " + format_rate_eta(ProgressLine(label, done, total, rate)) if rate else ""
    return f"{label}: {done}/{total} ({percent}%){tail}"


# tqdm puts ", " in front of a postfix
_OVERALL_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} phases [{elapsed}{postfix}]"
_PHASE_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}"
_COUNTER_FORMAT = "{desc}: {n_fmt} done{postfix}"  # the phase did not say how many items it has


def format_rate_eta(line: ProgressLine) -> str:
    """'3.10/s ETA 0:20' from the trainer's own rate (our process does not see the items)."""
    if not line.rate:
        return ""
    if line.total <= 0:
        return f"{line.rate:.2f}/s"
    left = max(line.total - line.done, 0) / line.rate
    minutes, seconds = divmod(int(left), 60)
    return f"{line.rate:.2f}/s ETA {minutes}:{seconds:02d}"


def _is_sized_terminal(out: TextIO) -> bool:
    """Bars only on a real terminal with a width (a 0-column pty would show nothing)."""
    try:
        return out.isatty() and os.get_terminal_size(out.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):
        return False


class ProgressDisplay:
    """Two bars (overall, phase) on a terminal; plain throttled lines elsewhere."""

    def __init__(self, out: TextIO, *, use_bars: bool | None = None, every_seconds: float = 10.0) -> None:
        self.out = out
        self.use_bars = _is_sized_terminal(out) if use_bars is None else use_bars
        self.every = every_seconds
        self._overall: Any = None
        self._phase: Any = None
        self._phase_key: tuple[str, int] | None = None
        self._last_plain = 0.0
        self._last_overall: tuple[int, int, str] | None = None

    def message(self, text: str) -> None:
        """A line of its own (events), written above the bars."""
        if self._overall is not None:
            from tqdm import tqdm

            tqdm.write(text, file=self.out)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def overall(self, done: int, total: int, label: str) -> None:
        if self.use_bars:
            from tqdm import tqdm

            if self._overall is None:
                self._overall = tqdm(total=total, initial=done, desc="run", position=0, file=self.out,
                                     dynamic_ncols=True, bar_format=_OVERALL_FORMAT)
            self._overall.total = total
            self._overall.n = done
            self._overall.set_postfix_str(label)
            self._overall.refresh()
        elif self._last_overall != (done, total, label):
            self._last_overall = (done, total, label)
            self.message(format_plain(f"run [{label}]", done, total))

    def phase(self, key: tuple[str, int], line: ProgressLine | None) -> None:
        """Per-phase progress; `key` (job name, shards) resets the bar when the attempt changes."""
        if line is None:
            return
        if self.use_bars:
            from tqdm import tqdm

            if self._phase is None or self._phase_key != key:
                if self._phase is not None:
                    self._phase.close()
                self._phase = tqdm(total=line.total or None, desc=line.phase, position=1, leave=False,
                                   file=self.out, dynamic_ncols=True,
                                   bar_format=_PHASE_FORMAT if line.total > 0 else _COUNTER_FORMAT)
                self._phase_key = key
            self._phase.total = line.total or None  # 0: unknown, a counter without a bar
            self._phase.n = line.done
            self._phase.set_postfix_str(format_rate_eta(line), refresh=False)
            self._phase.refresh()
            return
        now = time.monotonic()
        if self._phase_key != key or now - self._last_plain >= self.every or 0 < line.total <= line.done:
            if (self._phase_key, line.done) != (key, getattr(self, "_last_done", None)):
                self.message("  " + format_plain(line.phase, line.done, line.total, line.rate))
            self._phase_key = key
            self._last_plain = now
            self._last_done = line.done

    def close(self) -> None:
        for bar in (self._phase, self._overall):
            if bar is not None:
                bar.close()
        self._phase = self._overall = None
