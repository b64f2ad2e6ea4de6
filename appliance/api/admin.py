from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any

from litestar import Controller, Request, get, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from appliance.api.limits import UNTIMED
from appliance.api.openapi import error_responses
from appliance.schemas.admin import (
    EffectiveConfig,
    ErrorRecord,
    RecentErrors,
    RerankerChange,
    RerankerState,
)
from appliance.services.runtime import Runtime
from appliance.settings import describe, redact

#: Error answers kept for GET /admin/errors.
ERROR_LOG_SIZE = 200


class ErrorLog:
    """The latest error answers, newest last, in memory since start-up."""

    def __init__(self, size: int = ERROR_LOG_SIZE) -> None:
        self._records: deque[ErrorRecord] = deque(maxlen=size)

    def add(self, request: Request[Any, Any, Any], status_code: int, detail: str) -> None:
        """Remember that ``request`` was answered with an error."""
        self._records.append(
            ErrorRecord(
                time=datetime.now(UTC),
                method=request.method,
                path=request.url.path,
                status_code=status_code,
                detail=detail,
            )
        )

    def latest(self, limit: int) -> list[ErrorRecord]:
        """Return up to ``limit`` records, newest first."""
        return [self._records[-n] for n in range(1, min(limit, len(self._records)) + 1)]


class AdminController(Controller):
    """What went wrong, how the appliance is configured, and the re-ranker in use."""

    path = "/admin"
    tags = ["admin"]

    @get("/errors", summary="Recent error answers")
    async def errors(
        self,
        error_log: NamedDependency[ErrorLog],
        limit: Annotated[int, Parameter(ge=1, le=ERROR_LOG_SIZE)] = 50,
    ) -> RecentErrors:
        """List the latest requests answered with a 4xx or 5xx, newest first."""
        return RecentErrors(errors=error_log.latest(limit))

    @get("/config", summary="Effective configuration")
    async def config(self, runtime: NamedDependency[Runtime]) -> EffectiveConfig:
        """Return the settings, with secrets and the credentials in URLs masked."""
        switch = runtime.reranker_switch
        return EffectiveConfig(
            settings=redact(describe(runtime.settings)),
            reranker_kinds=switch.kinds,
            reranker_switchable=switch.switchable,
            reranker_kind=runtime.rerank.backend,
        )

    @get("/reranker", summary="The re-ranker in use")
    async def reranker(self, runtime: NamedDependency[Runtime]) -> RerankerState:
        """Return the kind of the re-ranker that requests use now."""
        return RerankerState(kind=runtime.rerank.backend)

    @put(
        "/reranker",
        summary="Switch the re-ranker",
        opt={UNTIMED: True},
        responses=error_responses(HTTPStatus.CONFLICT),
    )
    async def switch_reranker(
        self, data: JSONBody[RerankerChange], runtime: NamedDependency[Runtime]
    ) -> RerankerState:
        """Build a re-ranker of another kind from the settings and use it from now on.

        Refused (409) when reranker.switchable is false; if the new one cannot be built (503),
        the current one stays.
        """
        return RerankerState(kind=await runtime.reranker_switch.switch(data.kind))
