"""A small HTTP client of the appliance's API, for the CLI's admin commands and the dashboard."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from appliance import archive
from appliance.errors import ApplianceError
from appliance.schemas.admin import (
    EffectiveConfig,
    FeedbackTail,
    RecentErrors,
    RerankerState,
    RestoreResult,
    UserFeedbackPage,
    UserPage,
)
from appliance.schemas.base import ErrorBody
from appliance.schemas.items import ItemPage, ItemsUpsertResponse
from appliance.schemas.system import Health, ReindexResult, Stats
from appliance.schemas.users import RebuildResult

T = TypeVar("T")


class ApplianceClient:
    """Calls a running appliance; an error answer raises ``ApplianceError`` with its message."""

    def __init__(
        self,
        base_url: str,
        *,
        admin_key: str | None = None,
        timeout: float = 600.0,
        http: httpx.Client | None = None,
    ) -> None:
        """Connect to the appliance at ``base_url``.

        Args:
            base_url: The appliance's URL.
            admin_key: Sent as ``Authorization: Bearer <key>`` on every request; never shown.
            timeout: Seconds to wait for an answer (re-indexing waits as long as it takes).
            http: An HTTP client to send the requests through instead of a new one (tests pass
                Litestar's test client); it is closed with this one.

        """
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
        self._http = http or httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        if http is not None and admin_key:
            self._http.headers.update(headers)

    def __repr__(self) -> str:
        # Never the headers: they hold the admin key.
        return f"ApplianceClient({self.base_url!r})"

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise self._unreachable(e) from e
        if response.is_error:
            raise _failure(method, path, response)
        return response

    def _unreachable(self, error: httpx.HTTPError) -> ApplianceError:
        return ApplianceError(
            f"cannot reach the appliance at {self.base_url} (if it was just started, it may "
            f"still be loading its models and catalog): {error}"
        )

    def _call(self, method: str, path: str, kind: type[T], **kwargs: Any) -> T:
        return msgspec.json.decode(self._send(method, path, **kwargs).content, type=kind)

    def health(self) -> Health:
        """GET /health."""
        return self._call("GET", "/health", Health)

    def upsert_items(self, items: Sequence[dict[str, Any]]) -> ItemsUpsertResponse:
        """POST /items with one batch."""
        return self._call(
            "POST",
            "/items",
            ItemsUpsertResponse,
            content=msgspec.json.encode({"items": items}),
            headers={"content-type": "application/json"},
        )

    def reindex(self) -> ReindexResult:
        """POST /admin/reindex; waits as long as re-embedding the catalog takes."""
        return self._call("POST", "/admin/reindex", ReindexResult, timeout=None)

    def rebuild_users(self, user_id: str | None = None) -> RebuildResult:
        """POST /admin/users/rebuild."""
        params = {"user_id": user_id} if user_id else None
        return self._call(
            "POST", "/admin/users/rebuild", RebuildResult, params=params, timeout=None
        )

    def stats(self) -> Stats:
        """GET /stats."""
        return self._call("GET", "/stats", Stats)

    def metrics(self) -> str:
        """GET /metrics: the Prometheus text."""
        return self._send("GET", "/metrics").text

    def items(self, cursor: str | None = None, limit: int = 100, q: str | None = None) -> ItemPage:
        """GET /items: one page of the catalog, optionally only items matching ``q``."""
        return self._call(
            "GET", "/items", ItemPage, params=_params(cursor=cursor, limit=limit, q=q)
        )

    def users(self, cursor: str | None = None, limit: int = 100, q: str | None = None) -> UserPage:
        """GET /users: one page of users, optionally only ids containing ``q``."""
        return self._call(
            "GET", "/users", UserPage, params=_params(cursor=cursor, limit=limit, q=q)
        )

    def user_feedback(
        self, user_id: str, before: int | None = None, limit: int = 100
    ) -> UserFeedbackPage:
        """GET /users/{user_id}/feedback: the user's events, newest first."""
        return self._call(
            "GET",
            f"/users/{quote(user_id, safe='')}/feedback",
            UserFeedbackPage,
            params=_params(before=before, limit=limit),
        )

    def feedback_tail(self, after: int | None = None, limit: int = 100) -> FeedbackTail:
        """GET /feedback: events after ``after``, oldest first (without it, the latest)."""
        return self._call(
            "GET", "/feedback", FeedbackTail, params=_params(after=after, limit=limit)
        )

    def recent_errors(self, limit: int = 50) -> RecentErrors:
        """GET /admin/errors: the latest error answers, newest first."""
        return self._call("GET", "/admin/errors", RecentErrors, params={"limit": limit})

    def config(self) -> EffectiveConfig:
        """GET /admin/config: the effective settings, secrets masked."""
        return self._call("GET", "/admin/config", EffectiveConfig)

    def reranker(self) -> RerankerState:
        """GET /admin/reranker."""
        return self._call("GET", "/admin/reranker", RerankerState)

    def set_reranker(self, kind: str) -> RerankerState:
        """PUT /admin/reranker; waits while the new re-ranker loads."""
        return self._call(
            "PUT",
            "/admin/reranker",
            RerankerState,
            content=msgspec.json.encode({"kind": kind}),
            headers={"content-type": "application/json"},
            timeout=None,
        )

    def backup(self, target: Path) -> None:
        """GET /admin/backup into the file ``target``, replaced only once the whole archive is in.

        Raises:
            ApplianceError: The appliance refused or could not be reached; ``target`` is then
                left as it was.

        """
        partial = target.with_name(f".{target.name}.partial")
        try:
            with self._http.stream("GET", "/admin/backup", timeout=None) as response:
                if response.is_error:
                    response.read()
                    raise _failure("GET", "/admin/backup", response)
                with partial.open("wb") as sink:
                    for chunk in response.iter_bytes():
                        sink.write(chunk)
            partial.replace(target)
        except httpx.HTTPError as e:
            raise self._unreachable(e) from e
        finally:
            partial.unlink(missing_ok=True)

    def restore(self, source: Path, *, reembed: bool = False) -> RestoreResult:
        """POST /admin/restore with the archive ``source``, streamed from the file."""
        with source.open("rb") as body:
            return self._call(
                "POST",
                "/admin/restore",
                RestoreResult,
                content=body,
                params={"reembed": "true"} if reembed else None,
                headers={"content-type": archive.MEDIA_TYPE},
                timeout=None,
            )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


def _failure(method: str, path: str, response: httpx.Response) -> ApplianceError:
    """Return the error an error answer stands for, with the appliance's own message."""
    try:
        detail = msgspec.json.decode(response.content, type=ErrorBody).explained()
    except msgspec.DecodeError:  # not the appliance's answer (a proxy's page, say)
        detail = response.text
    error = ApplianceError(f"{method} {path} failed ({response.status_code}): {detail}")
    error.status_code = response.status_code
    return error


def _params(**values: str | int | None) -> dict[str, str | int]:
    return {k: v for k, v in values.items() if v is not None}
