from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter

from appliance.api.openapi import error_responses
from appliance.api.paging import PageCursor, PageLimit
from appliance.domain import Item
from appliance.schemas.items import (
    MAX_TITLE_LENGTH,
    ItemOut,
    ItemPage,
    ItemsUpsertRequest,
    ItemsUpsertResponse,
)
from appliance.services.runtime import Runtime


def _out(item: Item) -> ItemOut:
    return ItemOut(item_id=item.item_id, title=item.title, text=item.text, metadata=item.metadata)


async def upsert_items(runtime: Runtime, request: ItemsUpsertRequest) -> ItemsUpsertResponse:
    """Upsert a validated batch and describe what changed (POST /items, ``appliance ingest``)."""
    summary = await runtime.catalog.upsert(
        [Item(i.item_id, i.title, i.text, i.metadata) for i in request.items]
    )
    return ItemsUpsertResponse(
        received=len(request.items),
        created=summary.created,
        updated=summary.updated,
        unchanged=summary.unchanged,
        embedded=summary.embedded,
    )


class ItemController(Controller):
    """The catalog."""

    path = "/items"
    tags = ["catalog"]

    @post(status_code=200, summary="Add or replace items")
    async def upsert(
        self, data: JSONBody[ItemsUpsertRequest], runtime: NamedDependency[Runtime]
    ) -> ItemsUpsertResponse:
        """Upsert a batch; items whose title and text did not change are not re-embedded."""
        return await upsert_items(runtime, data)

    @get(summary="List items")
    async def list_items(
        self,
        runtime: NamedDependency[Runtime],
        cursor: PageCursor = None,
        limit: PageLimit = 100,
        q: Annotated[
            str | None,
            Parameter(
                max_length=MAX_TITLE_LENGTH,
                description="Only items whose title or text contains this, ignoring case",
            ),
        ] = None,
    ) -> ItemPage:
        """Page through the catalog in item-id order, optionally only the items that match."""
        items, next_cursor = await runtime.catalog.page(cursor, limit, q or None)
        return ItemPage(items=[_out(i) for i in items], next_cursor=next_cursor)

    @get("/{item_id:str}", summary="Get an item", responses=error_responses(HTTPStatus.NOT_FOUND))
    async def get_item(self, item_id: FromPath[str], runtime: NamedDependency[Runtime]) -> ItemOut:
        """Return one item."""
        return _out(await runtime.catalog.get(item_id))

    @delete(
        "/{item_id:str}",
        summary="Delete an item",
        status_code=204,
        responses=error_responses(HTTPStatus.NOT_FOUND),
    )
    async def delete_item(self, item_id: FromPath[str], runtime: NamedDependency[Runtime]) -> None:
        """Remove an item from the catalog and the index; feedback about it is kept."""
        await runtime.catalog.delete(item_id)
