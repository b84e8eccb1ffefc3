"""Status timestamps: RFC 3339 in UTC, what Kubernetes writes, and back.

Its own module so that every policy module can stamp a condition or an attempt without
importing the orchestrator (`decide.py` re-exports both names for its older callers).
"""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix, second precision (what Kubernetes writes)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """Inverse of `format_time`; also accepts fractional seconds and +00:00 offsets."""
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)
