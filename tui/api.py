"""The dashboard's asynchronous client of the appliance's HTTP API.

One method per endpoint, each decoding the answer into the wire contract's Structs
(``appliance.schemas``). An error answer raises :class:`ApiError` carrying the server's
``detail``; a server that cannot be reached (or answers 5xx) raises :class:`UnreachableError`.
Every answer, good or bad, is also reported to an optional ``on_reachability`` callback, which
the dashboard uses for its connection banner.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from appliance.schemas.admin import (
    EffectiveConfig,
    FeedbackTail,
    RecentErrors,
    RerankerChange,
    RerankerState,
    UserFeedbackPage,
    UserPage,
)
from appliance.schemas.base import ErrorBody
from appliance.schemas.feedback import FeedbackRequest, FeedbackResponse
from appliance.schemas.fusion import FusionOut
from appliance.schemas.items import ItemOut, ItemPage, ItemsUpsertResponse
from appliance.schemas.recommendations import (
    RecommendationRequest,
    RecommendationResponse,
    SimilarItemsResponse,
)
from appliance.schemas.system import Health, Stats
from appliance.schemas.users import UserDeleted, UserProfileOut

T = TypeVar("T")

#: Called after every request: ``None`` when the server answered (below 500), otherwise why it
#: could not be reached ("connection refused", "answered 503: ...").
ReachabilityCallback = Callable[[str | None], None]

_SERVER_ERROR = 500


class ApiError(Exception):
    """The appliance answered a request with an error.

    Attributes:
        method: HTTP method of the request.
        path: Path of the request.
        status_code: The answer's status, or ``None`` when there was no answer.
        detail: The server's ``detail`` (what went wrong and what to change), or why there was no
            answer.

    """

    def __init__(self, method: str, path: str, status_code: int | None, detail: str) -> None:
        self.method = method
        self.path = path
        self.status_code = status_code
        self.detail = detail
        status = f" ({status_code})" if status_code is not None else ""
        super().__init__(f"{method} {path}{status}: {detail}")


class UnreachableError(ApiError):
    """No usable answer: the connection failed, timed out, or the server answered 5xx."""


class ApplianceApi:
    """Talks to one running appliance.

    Args:
        base_url: The appliance, e.g. ``http://127.0.0.1:8000``.
        admin_key: Sent as ``Authorization: Bearer <key>`` on every request; never shown.
        timeout: Seconds each request may take.
        on_reachability: See :data:`ReachabilityCallback`.
        transport: An httpx transport to use instead of the network (tests).

    """

    def __init__(
        self,
        base_url: str,
        admin_key: str | None = None,
        *,
        timeout: float = 10.0,
        on_reachability: ReachabilityCallback | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )
        self.on_reachability = on_reachability

    def __repr__(self) -> str:
        # Never the headers: they hold the admin key.
        return f"ApplianceApi({self.base_url!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- plumbing -------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        query = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        content = msgspec.json.encode(body) if body is not None else None
        headers = {"content-type": "application/json"} if content is not None else None
        try:
            response = await self._http.request(
                method, path, params=query, content=content, headers=headers
            )
        except httpx.TransportError as e:
            reason = describe_transport_error(e)
            self._report(reason)
            raise UnreachableError(method, path, None, reason) from e
        if response.status_code >= _SERVER_ERROR:
            detail = _detail(response)
            self._report(f"answers {response.status_code}: {detail}")
            raise UnreachableError(method, path, response.status_code, detail)
        self._report(None)
        if response.is_error:
            raise ApiError(method, path, response.status_code, _detail(response))
        return response

    async def _call(
        self,
        method: str,
        path: str,
        kind: type[T],
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> T:
        response = await self._send(method, path, params=params, body=body)
        try:
            return msgspec.json.decode(response.content, type=kind)
        except msgspec.DecodeError as e:
            # A different server, or a different version of the contract.
            raise ApiError(method, path, response.status_code, f"unexpected answer: {e}") from e

    def _report(self, reason: str | None) -> None:
        if self.on_reachability is not None:
            self.on_reachability(reason)

    # -- system ---------------------------------------------------------------------------------

    async def health(self) -> Health:
        """GET /health: readiness of each component."""
        return await self._call("GET", "/health", Health)

    async def stats(self) -> Stats:
        """GET /stats: counts of items, users, feedback events, index points."""
        return await self._call("GET", "/stats", Stats)

    async def metrics(self) -> str:
        """GET /metrics: the Prometheus text exposition."""
        response = await self._send("GET", "/metrics")
        return response.text

    async def recent_errors(self, limit: int = 50) -> RecentErrors:
        """GET /admin/errors: the latest error answers, newest first."""
        return await self._call("GET", "/admin/errors", RecentErrors, params={"limit": limit})

    async def config(self) -> EffectiveConfig:
        """GET /admin/config: the effective settings, secrets masked."""
        return await self._call("GET", "/admin/config", EffectiveConfig)

    async def fusion(self) -> FusionOut:
        """GET /admin/fusion: the fusion each kind of request gets, and what learning found."""
        return await self._call("GET", "/admin/fusion", FusionOut)

    async def set_reranker(self, kind: str) -> RerankerState:
        """PUT /admin/reranker: switch the re-ranker while the appliance runs."""
        return await self._call(
            "PUT", "/admin/reranker", RerankerState, body=RerankerChange(kind=kind)
        )

    # -- catalog --------------------------------------------------------------------------------

    async def items(self, q: str = "", cursor: str | None = None, limit: int = 50) -> ItemPage:
        """GET /items: a page of the catalog, optionally searched."""
        return await self._call(
            "GET", "/items", ItemPage, params={"q": q, "cursor": cursor, "limit": limit}
        )

    async def item(self, item_id: str) -> ItemOut:
        """GET /items/{id}."""
        return await self._call("GET", f"/items/{_segment(item_id)}", ItemOut)

    async def similar(self, item_id: str, top_k: int = 10) -> SimilarItemsResponse:
        """GET /items/{id}/similar: more like the item, for nobody in particular."""
        path = f"/items/{_segment(item_id)}/similar"
        return await self._call("GET", path, SimilarItemsResponse, params={"top_k": top_k})

    async def delete_item(self, item_id: str) -> None:
        """DELETE /items/{id}."""
        await self._send("DELETE", f"/items/{_segment(item_id)}")

    async def upsert_items(self, items: Sequence[dict[str, Any]]) -> ItemsUpsertResponse:
        """POST /items with one batch (items in the wire format, as ``ingest_files`` reads)."""
        body = {"items": list(items)}
        return await self._call("POST", "/items", ItemsUpsertResponse, body=body)

    # -- users and feedback ---------------------------------------------------------------------

    async def users(self, q: str = "", cursor: str | None = None, limit: int = 50) -> UserPage:
        """GET /users: a page of users, optionally searched."""
        return await self._call(
            "GET", "/users", UserPage, params={"q": q, "cursor": cursor, "limit": limit}
        )

    async def user(self, user_id: str) -> UserProfileOut:
        """GET /users/{id}: what the appliance has learned about a user."""
        return await self._call("GET", f"/users/{_segment(user_id)}", UserProfileOut)

    async def user_feedback(
        self, user_id: str, limit: int = 50, before: int | None = None
    ) -> UserFeedbackPage:
        """GET /users/{id}/feedback: the user's events, newest first."""
        return await self._call(
            "GET",
            f"/users/{_segment(user_id)}/feedback",
            UserFeedbackPage,
            params={"limit": limit, "before": before},
        )

    async def delete_user(self, user_id: str) -> UserDeleted:
        """DELETE /users/{id}: the profile and every event of the user."""
        return await self._call("DELETE", f"/users/{_segment(user_id)}", UserDeleted)

    async def feedback_tail(self, after: int | None = None, limit: int = 500) -> FeedbackTail:
        """GET /feedback: events after ``after``, oldest first (without it, the latest ones)."""
        return await self._call(
            "GET", "/feedback", FeedbackTail, params={"after": after, "limit": limit}
        )

    async def send_feedback(self, request: FeedbackRequest) -> FeedbackResponse:
        """POST /feedback."""
        return await self._call("POST", "/feedback", FeedbackResponse, body=request)

    async def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        """POST /recommendations."""
        return await self._call("POST", "/recommendations", RecommendationResponse, body=request)


def describe_transport_error(error: httpx.TransportError) -> str:
    """Say in a few words why a request got no answer ("connection refused", "timed out")."""
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            if cause.errno == errno.ECONNREFUSED:
                return "connection refused"
            return os.strerror(cause.errno).lower()
        cause = cause.__cause__ or cause.__context__
    return str(error) or type(error).__name__


def _segment(identifier: str) -> str:
    return quote(identifier, safe="")


def _detail(response: httpx.Response) -> str:
    try:
        return msgspec.json.decode(response.content, type=ErrorBody).explained()
    except msgspec.DecodeError:  # not the appliance's answer (a proxy's page, say)
        return response.text.strip()[:300] or response.reason_phrase
