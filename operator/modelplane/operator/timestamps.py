"""RFC 3339 times as status fields carry them, and the epoch seconds decisions compare."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(epoch: float) -> str:
    """Whole seconds, UTC, `Z`: how Kubernetes writes times in status."""
    moment = datetime.fromtimestamp(epoch, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def epoch_of(moment: str | None) -> float | None:
    """The time a status field names; None when absent or unreadable."""
    if not moment:
        return None
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None
