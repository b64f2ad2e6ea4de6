"""Short, readable renderings of values for tables and status lines."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rich.text import Text

_SHORT_TEXT = 80


def when(moment: datetime | None, *, now: datetime | None = None) -> str:
    """Local time of day for today's moments, the date and time for older ones."""
    if moment is None:
        return "-"
    local = moment.astimezone()
    today = (now or datetime.now(UTC)).astimezone().date()
    if local.date() == today:
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M")


def milliseconds(value: float | None) -> str:
    """``12.3 ms``, or a dash when there is no value."""
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"  # noqa: PLR2004


def excerpt(text: str, length: int = _SHORT_TEXT) -> str:
    """Cut ``text`` to ``length`` characters on one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= length else flat[: length - 1] + "…"


def metadata(values: Mapping[str, Any], length: int = 60) -> str:
    """``year=1998 genres=Sci-Fi,Drama`` cut to ``length``."""
    parts = []
    for key, value in values.items():
        shown = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        parts.append(f"{key}={shown}")
    return excerpt(" ".join(parts), length)


def sources(values: Mapping[str, float]) -> str:
    """``vector 0.632 · popularity 0.100``."""
    return " · ".join(f"{name} {score:.3f}" for name, score in values.items())


def signed(value: float) -> str:
    """``+1.00`` or ``-0.60``."""
    return f"{value:+.2f}"


def row(*values: str | Text) -> tuple[Text, ...]:
    """Cells for ``DataTable.add_row``: strings as plain text, never read as markup.

    A title such as "[REC]" would otherwise be taken for a style tag.
    """
    return tuple(Text(value) if isinstance(value, str) else value for value in values)
