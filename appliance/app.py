"""The Litestar application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.exceptions.responses import ExceptionResponseContent
from litestar.openapi import OpenAPIConfig
from litestar.types import Middleware

from appliance import collector
from appliance.api.admin import AdminController, ErrorLog
from appliance.api.auth import OPENAPI_SECURITY, AccessMiddleware, openapi_components
from appliance.api.backup import BackupController
from appliance.api.bodies import StrictBodies
from appliance.api.feedback import FeedbackController
from appliance.api.fusion import FusionController
from appliance.api.items import ItemController
from appliance.api.limits import TimeoutMiddleware, rate_limit_config, too_many_requests
from appliance.api.metrics import MetricsController, RequestMetrics
from appliance.api.openapi import ErrorAnswers, WireSchemas
from appliance.api.recommendations import RecommendationController
from appliance.api.system import SystemController
from appliance.api.users import UserController
from appliance.backends.registry import Backends
from appliance.errors import ApplianceError
from appliance.schemas.base import ErrorBody, InvalidValue
from appliance.schemas.items import MAX_ITEMS_PER_REQUEST
from appliance.security import KeyRing, check_exposure
from appliance.services.runtime import Runtime, open_runtime
from appliance.settings import ServerSettings, Settings

log = logging.getLogger(__name__)

#: Characters of an unexpected exception's message kept in the error log.
_MAX_LOGGED_MESSAGE = 500


def _error_log(request: Request[object, object, State]) -> ErrorLog:
    error_log: ErrorLog = request.app.state.error_log
    return error_log


def _error_response(
    request: Request[object, object, State], exc: ApplianceError
) -> Response[ErrorBody]:
    _error_log(request).add(request, exc.status_code, exc.message)
    return Response(
        ErrorBody(status_code=exc.status_code, detail=exc.message),
        status_code=exc.status_code,
        media_type=MediaType.JSON,
    )


def _json_error(request: Request[object, object, State], exc: HTTPException) -> Response[object]:
    # Litestar would answer in the route's media type: its errors on GET /metrics would be
    # JSON declared as text/plain. An error is an ErrorBody, in JSON, on every route.
    return ExceptionResponseContent(
        status_code=exc.status_code,
        detail=exc.detail,
        media_type=MediaType.JSON,
        headers=exc.headers,
        extra=exc.extra,
    ).to_response(request)


def _http_error_response(
    request: Request[object, object, State], exc: HTTPException
) -> Response[object]:
    # Litestar's own answers: validation errors, unknown routes, wrong methods.
    detail = exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        invalid = [
            InvalidValue(
                message=str(e.get("message", "")),
                key=str(e.get("key") or ""),
                source=str(e.get("source", "")),
            )
            for e in exc.extra
            if isinstance(e, dict)
        ]
        detail = ErrorBody(status_code=exc.status_code, detail=detail, extra=invalid).explained()
    server: ServerSettings = request.app.state.server_settings
    if isinstance(exc, RequestEntityTooLarge):
        exc = RequestEntityTooLarge(
            detail=f"the request body is larger than {server.max_body_bytes} bytes "
            f"(server.max_body_bytes); send less per request (POST /items takes at most "
            f"{MAX_ITEMS_PER_REQUEST} items, so split big catalogs into batches)"
        )
        detail = exc.detail
    elif isinstance(exc, TooManyRequestsException):
        detail, headers = too_many_requests(server, dict(exc.headers or {}))
        exc = TooManyRequestsException(detail=detail, headers=headers)
    _error_log(request).add(request, exc.status_code, detail)
    return _json_error(request, exc)


def _unexpected_error_response(
    request: Request[object, object, State], exc: Exception
) -> Response[object]:
    # A 500 is always a bug: keep the traceback in the server log and the gist in the error
    # log; the client learns nothing about the internals.
    log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    _error_log(request).add(
        request, 500, f"Internal Server Error ({type(exc).__name__}: {exc})"[:_MAX_LOGGED_MESSAGE]
    )
    return _json_error(request, InternalServerException())


def _runtime(state: State) -> Runtime:
    runtime: Runtime = state.runtime
    return runtime


def _error_log_of(state: State) -> ErrorLog:
    error_log: ErrorLog = state.error_log
    return error_log


def create_app(
    settings: Settings,
    *,
    backends: Backends | None = None,
    advertise_url: str = "",
    seed_catalog: Path | None = None,
    settle_heap: bool = False,
) -> Litestar:
    """Build the appliance's HTTP application.

    Args:
        settings: The configuration.
        backends: Pre-built backends to use instead of building them from the settings.
        advertise_url: This server's URL, recorded in the data directory for admin commands.
        seed_catalog: A catalog file (JSONL wire format) loaded before serving; unchanged
            items are skipped, so re-using a data directory is quick.
        settle_heap: Open the runtime with the garbage collector off, then set the long-lived
            objects aside from it and turn it back on (``appliance.collector``): for the
            serving process.

    Returns:
        The application; its lifespan opens and closes the runtime.

    Raises:
        ConfigError: The server would be reachable from other machines without any API key
            (see ``appliance.security.check_exposure``), or a configured key is malformed.

    """
    check_exposure(settings)
    keyring = KeyRing(settings.auth)
    server = settings.server
    timeouts = TimeoutMiddleware(server.request_timeout_seconds)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if settle_heap:
            collector.pause_for_start_up()
        async with open_runtime(settings, backends, advertise_url=advertise_url) as runtime:
            # Before a seed catalog's load, which may be long and make cyclic garbage of its own.
            if settle_heap:
                collector.settle()
            if seed_catalog is not None:
                summary = await runtime.catalog.load_file(seed_catalog)
                log.info("catalog %s loaded: %s", seed_catalog.name, summary)
            app.state.runtime = runtime
            try:
                yield
            finally:
                # Requests answered early by the timeout still use the runtime.
                await timeouts.drain()

    # Outermost first: every request is counted, then limited in rate, then in time, then its
    # key is checked.
    middleware: list[Middleware] = [RequestMetrics()]
    if server.rate_limit_per_minute:
        middleware.append(rate_limit_config(server).middleware)
    if server.request_timeout_seconds:
        middleware.append(timeouts)
    if keyring.enabled:
        middleware.append(AccessMiddleware(keyring))

    return Litestar(
        route_handlers=[
            RecommendationController,
            FeedbackController,
            ItemController,
            UserController,
            SystemController,
            AdminController,
            BackupController,
            MetricsController,
            FusionController,
        ],
        dependencies={
            "runtime": Provide(_runtime, sync_to_thread=False),
            "error_log": Provide(_error_log_of, sync_to_thread=False),
        },
        exception_handlers={
            ApplianceError: _error_response,
            HTTPException: _http_error_response,
            Exception: _unexpected_error_response,
        },
        middleware=middleware,
        # Bodies decoded strictly; the published schema is msgspec's and declares every error.
        plugins=[StrictBodies(), WireSchemas(), ErrorAnswers()],
        request_max_body_size=server.max_body_bytes,
        state=State({"error_log": ErrorLog(), "keyring": keyring, "server_settings": server}),
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="Recommendation appliance",
            version="0.1.0",
            components=openapi_components(),
            security=OPENAPI_SECURITY,
        ),
    )
