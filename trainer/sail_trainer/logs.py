"""Logging with run/iteration/phase context on every line, and progress reporting.

`configure_logging` installs one stderr handler whose formatter adds the context set by
`set_log_context`, so library modules just use `logging.getLogger(__name__)`. Progress is a
tqdm bar when stderr is a terminal and a parseable INFO line otherwise:

    progress phase=generate done=12 total=64 rate=3.1/s

Secrets never reach a log line: nothing here logs the environment, and storage URIs
carry no credentials (those come from the standard AWS environment).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from sail_api.logsafety import quiet_credential_loggers

_CONTEXT: dict[str, str] = {}
log = logging.getLogger("sail_trainer.progress")


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.sail_context = " ".join(f"{k}={v}" for k, v in _CONTEXT.items())
        return True


def set_log_context(**values: Any) -> None:
    """Set (or with None, drop) context fields shown on every log line."""
    for key, value in values.items():
        if value is None:
            _CONTEXT.pop(key, None)
        else:
            _CONTEXT[key] = str(value)


def configure_logging(level: int = logging.INFO) -> None:
    """One stderr handler for the `sail_trainer` and `sail_api` loggers, with context; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(sail_context)s] %(name)s: %(message)s"))
    for name in ("sail_trainer", "sail_api"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    quiet_credential_loggers()


class Progress:
    """Counts work items of a phase; a tqdm bar on a TTY, periodic `progress ...` lines otherwise."""

    def __init__(self, phase: str, total: int, *, every_seconds: float = 10.0, enabled: bool = True) -> None:
        self.phase = phase
        self.total = total
        self.done = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._every = every_seconds
        self._enabled = enabled
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm  # only on a TTY: the CLI and the runner import this module and stay light

            self._bar = tqdm(total=total, desc=phase, file=sys.stderr, dynamic_ncols=True)

    def rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self._every or self.done >= self.total:
            self._last = now
            log.info("progress phase=%s done=%d total=%d rate=%.3g/s", self.phase, self.done, self.total, self.rate())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
