from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

MAX_ID_LENGTH = 256
#: What an ``Id`` may hold (a query parameter naming one checks it too).
ID_PATTERN = r"^[^/\x00-\x1f]+$"

#: A client-chosen id ("alice-123", "movie_101"): it appears in URL paths, so no slash and
#: no control characters.
Id = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=ID_PATTERN,
        description="A client-chosen id: 1 to 256 characters, no '/' or control characters.",
        examples=["alice-123"],
    ),
]


class Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: an unknown field is an error, not silently ignored."""


class Response(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Base of response bodies."""


class InvalidValue(Response):
    """One value of the request that failed validation."""

    message: str
    key: str = ""
    """Where: the field's path in the body (``items[0].title``), or the parameter's name."""
    source: str = ""
    """body, query, path, header or cookie."""


class ErrorBody(Response):
    """Every 4xx and 5xx answer."""

    status_code: int
    detail: str
    """What went wrong and what to change."""
    extra: list[InvalidValue] | None = None
    """With a 400 for values that do not match the schema: each of them."""

    def explained(self) -> str:
        """Return the detail, with what is wrong in each value it concerns (``filters: ...``).

        Litestar's detail of a value that does not match the schema only says that validation
        failed; the value and what is wrong with it are in ``extra``.
        """
        values = "; ".join(f"{v.key or v.source}: {v.message}" for v in self.extra or ())
        return f"{self.detail}: {values}" if values else self.detail
