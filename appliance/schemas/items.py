from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from appliance.domain import FIELD_NAME
from appliance.schemas.base import Id, Request, Response

MAX_ITEMS_PER_REQUEST = 1000
MAX_TITLE_LENGTH = 1000
MAX_TEXT_LENGTH = 20_000
MAX_METADATA_KEYS = 64

MetadataKey = Annotated[
    str,
    Meta(
        pattern=f"^{FIELD_NAME}$",
        description="Letters, digits, '_' and '-' (up to 128): keys are also filter fields.",
    ),
]


class ItemIn(Request):
    """A catalog item to add or replace."""

    item_id: Id
    title: Annotated[str, Meta(min_length=1, max_length=MAX_TITLE_LENGTH)]
    text: Annotated[str, Meta(max_length=MAX_TEXT_LENGTH)] = ""
    """Description embedded together with the title."""
    metadata: Annotated[dict[MetadataKey, Any], Meta(max_length=MAX_METADATA_KEYS)] = {}
    """Filterable attributes: strings, numbers, booleans or lists of strings."""


class ItemsUpsertRequest(Request):
    """A batch of items to add or replace."""

    items: Annotated[list[ItemIn], Meta(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)]


class ItemsUpsertResponse(Response):
    """What the batch changed."""

    received: int
    created: int
    updated: int
    unchanged: int
    embedded: int
    """Items whose title or text changed and were embedded again."""


class ItemOut(Response):
    """A catalog item."""

    item_id: str
    title: str
    text: str
    metadata: dict[str, Any]


class ItemPage(Response):
    """A page of items in id order."""

    items: list[ItemOut]
    next_cursor: str | None = None
    """Pass as ?cursor= to get the next page; absent on the last page."""
