"""The Litestar application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from appliance.api.feedback import FeedbackController
from appliance.api.items import ItemController
from appliance.api.recommendations import RecommendationController
from appliance.api.system import SystemController
from appliance.api.users import UserController
from appliance.backends.registry import Backends
from appliance.errors import ApplianceError
from appliance.schemas.base import ErrorBody
from appliance.services.runtime import Runtime, open_runtime
from appliance.settings import Settings

log = logging.getLogger(__name__)


def _error_response(
    request: Request[object, object, State], exc: ApplianceError
) -> Response[ErrorBody]:
    del request
    return Response(
        ErrorBody(status_code=exc.status_code, detail=exc.message),
        status_code=exc.status_code,
        media_type=MediaType.JSON,
    )


def _runtime(state: State) -> Runtime:
    runtime: Runtime = state.runtime
    return runtime


def create_app(
    settings: Settings,
    *,
    backends: Backends | None = None,
    advertise_url: str = "",
    seed_catalog: Path | None = None,
) -> Litestar:
    """Build the appliance's HTTP application.

    Args:
        settings: The configuration.
        backends: Pre-built backends to use instead of building them from the settings.
        advertise_url: This server's URL, recorded in the data directory for admin commands.
        seed_catalog: A catalog file (JSONL wire format) loaded before serving; unchanged
            items are skipped, so re-using a data directory is quick.

    Returns:
        The application; its lifespan opens and closes the runtime.

    """

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_runtime(settings, backends, advertise_url=advertise_url) as runtime:
            if seed_catalog is not None:
                summary = await runtime.catalog.load_file(seed_catalog)
                log.info("catalog %s loaded: %s", seed_catalog.name, summary)
            app.state.runtime = runtime
            yield

    return Litestar(
        route_handlers=[
            RecommendationController,
            FeedbackController,
            ItemController,
            UserController,
            SystemController,
        ],
        dependencies={"runtime": Provide(_runtime, sync_to_thread=False)},
        exception_handlers={ApplianceError: _error_response},
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="Recommendation appliance", version="0.1.0"),
    )
