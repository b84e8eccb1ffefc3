"""The one time module of the operator: RFC 3339 in and out, and the clock.

The planner writes times into the status, the Kubernetes executor reads them from API objects,
the local executor stamps its attempts: all three use these functions, so a time written by
one is read back the same way by the others.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now() -> datetime:
    """The current time, timezone-aware in UTC (the only clock the executors read)."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix, second precision (what Kubernetes writes)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    """Inverse of `format_time`; also accepts fractional seconds and +00:00 offsets.

    None for a missing or unparsable value (an API object or a hand-edited status may hold
    anything): a time nobody can read is treated as no time at all, never as a crash.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
