from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter

from appliance.api.auth import CLIENT_ACCESS
from appliance.api.openapi import error_responses
from appliance.api.paging import PageCursor, PageLimit
from appliance.api.recommendations import conditions_of, filters_in_query, recommended_items
from appliance.domain import Item
from appliance.schemas.base import ID_PATTERN, MAX_ID_LENGTH
from appliance.schemas.items import (
    MAX_TITLE_LENGTH,
    ItemOut,
    ItemPage,
    ItemsUpsertRequest,
    ItemsUpsertResponse,
)
from appliance.schemas.recommendations import FUSION_PATTERN, SimilarItemsResponse
from appliance.services.learning import FusionMode
from appliance.services.recommend import ANONYMOUS, RecommendationQuery
from appliance.services.runtime import Runtime

#: Room for filters in a query string: a few dozen conditions; longer URLs are often refused on
#: the way (proxies, load balancers) before they get here.
MAX_FILTERS_LENGTH = 4096


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

    @get(
        "/{item_id:str}/similar",
        summary="Items like this one",
        opt=CLIENT_ACCESS,
        responses=error_responses(HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    )
    async def similar(
        self,
        item_id: FromPath[str],
        runtime: NamedDependency[Runtime],
        *,
        top_k: Annotated[int, Parameter(ge=1, le=100, description="Items returned")] = 5,
        user_id: Annotated[
            str | None,
            Parameter(
                min_length=1,
                max_length=MAX_ID_LENGTH,
                pattern=ID_PATTERN,
                description="The user to answer for: their seen items are left out, their "
                "taste counts, and the answer is logged for the fusion to learn from",
            ),
        ] = None,
        sources: Annotated[
            list[str] | None,
            Parameter(max_items=16, description="Candidate sources to ask (repeat the parameter)"),
        ] = None,
        fusion: Annotated[
            str | None, Parameter(pattern=FUSION_PATTERN, description="rrf or learned")
        ] = None,
        filters: Annotated[
            str | None,
            Parameter(
                max_length=MAX_FILTERS_LENGTH,
                description="Metadata conditions as a JSON object, as POST /recommendations "
                'takes them: {"genres": "Comedy", "year": {"gte": 1990}}',
            ),
        ] = None,
        exclude_seen: Annotated[
            bool, Parameter(description="With user_id: leave out the items they gave feedback on")
        ] = True,
        diversity: Annotated[
            float,
            Parameter(
                ge=0.0,
                le=1.0,
                description="Trade likeness for variety, as in POST "
                "/recommendations: 0 keeps the fused order",
            ),
        ] = 0.0,
    ) -> SimilarItemsResponse:
        """More like this: the sources asked as for a request that names the item.

        The collaborative source proposes what the people who chose the item chose too, the
        named and vector sources the items whose text is nearest its own, the neighbourhood
        the items whose company resembles it, the keyword source the items sharing its title's
        words; the item itself is left out. Filters and diversity work as for recommendations.
        """
        result = await runtime.cached_recommender.recommend(
            RecommendationQuery(
                user_id=ANONYMOUS if user_id is None else user_id,
                like_items=(item_id,),
                top_k=top_k,
                sources=None if sources is None else frozenset(sources),
                fusion=None if fusion is None else FusionMode(fusion),
                conditions=conditions_of(None if filters is None else filters_in_query(filters)),
                exclude_seen=exclude_seen,
                diversity=diversity,
            )
        )
        return SimilarItemsResponse(
            item_id=item_id,
            recommendations=recommended_items(result),
            timestamp=result.timestamp,
            user_id=user_id,
            request_id="" if user_id is None else result.request_id,
            timings_ms=result.timings_ms,
            fusion=result.fusion,
            fusion_weights=result.fusion_weights or {},
            diversity=result.diversity or None,
        )

    @delete(
        "/{item_id:str}",
        summary="Delete an item",
        status_code=204,
        responses=error_responses(HTTPStatus.NOT_FOUND),
    )
    async def delete_item(self, item_id: FromPath[str], runtime: NamedDependency[Runtime]) -> None:
        """Remove an item from the catalog and the index; feedback about it is kept."""
        await runtime.catalog.delete(item_id)
