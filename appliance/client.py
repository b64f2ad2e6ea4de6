"""A small HTTP client of the appliance's API, for the CLI's admin commands and the dashboard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
import msgspec

from appliance.errors import ApplianceError
from appliance.schemas.items import ItemsUpsertResponse
from appliance.schemas.system import Health, ReindexResult
from appliance.schemas.users import RebuildResult

T = TypeVar("T")


class ApplianceClient:
    """Calls a running appliance; an error answer raises ``ApplianceError`` with its message."""

    def __init__(self, base_url: str, *, timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def _call(self, method: str, path: str, kind: type[T], **kwargs: Any) -> T:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ApplianceError(
                f"cannot reach the appliance at {self.base_url} (if it was just started, it may "
                f"still be loading its models and catalog): {e}"
            ) from e
        if response.is_error:
            try:
                detail = msgspec.json.decode(response.content).get("detail", response.text)
            except msgspec.DecodeError:
                detail = response.text
            error = ApplianceError(f"{method} {path} failed ({response.status_code}): {detail}")
            error.status_code = response.status_code
            raise error
        return msgspec.json.decode(response.content, type=kind)

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

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()
