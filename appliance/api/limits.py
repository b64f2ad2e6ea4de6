"""Request limits: rate per key, answer time; the body size limit is Litestar's own.

Both answers are errors with a message that says which setting applies.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions import ServiceUnavailableException
from litestar.middleware import ASGIMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from appliance.security import key_fingerprint, presented_key
from appliance.settings import ServerSettings

log = logging.getLogger(__name__)

#: A route handler whose ``opt`` holds this key is never rate limited (/health).
NOT_RATE_LIMITED = "not_rate_limited"
#: A route handler whose ``opt`` holds this key may take as long as it takes (maintenance).
UNTIMED = "untimed"


def _rate_identity(request: Request[Any, Any, Any]) -> str:
    # Limited per configured key; a request without a valid key counts against its address, so
    # inventing keys does not buy more requests.
    key = presented_key(request.headers)
    keyring = request.app.state.keyring
    if key is not None and keyring.enabled and keyring.role_of(key) is not None:
        return f"key:{key_fingerprint(key)}"
    return f"address:{get_remote_address(request)}"


def rate_limit_config(server: ServerSettings) -> RateLimitConfig:
    """Litestar's rate limiter, ``server.rate_limit_per_minute`` requests per key."""
    return RateLimitConfig(
        rate_limit=("minute", server.rate_limit_per_minute),
        exclude_opt_key=NOT_RATE_LIMITED,
        identifier_for_request=_rate_identity,
    )


def too_many_requests(
    server: ServerSettings, headers: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """Return the 429's message and headers (Litestar's limiter sets RateLimit-* headers only)."""
    reset = headers.get("RateLimit-Reset", "60")
    retry_after = str(max(1, int(reset))) if reset.isdigit() else "60"
    detail = (
        f"too many requests: at most {server.rate_limit_per_minute} per minute per API key "
        f"(server.rate_limit_per_minute); retry after {retry_after} s"
    )
    return detail, {**headers, "Retry-After": retry_after}


class TimeoutMiddleware(ASGIMiddleware):
    """Answer 503 when a request takes longer than ``server.request_timeout_seconds``.

    The handler is not cancelled: cancelling a write between the store and the index would leave
    them apart until the next start. It completes in the background, its answer discarded; the
    lifespan waits for such handlers (``drain``) before closing the stores.
    """

    scopes = (ScopeType.HTTP,)
    exclude_opt_key = UNTIMED

    def __init__(self, seconds: float) -> None:
        """Time out requests after ``seconds``."""
        self.seconds = seconds
        self._detached: set[asyncio.Task[None]] = set()

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Run the request; past the deadline, answer 503 unless the answer has started."""
        started = False
        timed_out = False

        async def send_unless_timed_out(message: Message) -> None:
            nonlocal started
            if timed_out:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        task = asyncio.ensure_future(next_app(scope, receive, send_unless_timed_out))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.seconds)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if done or started:
            await task
            return
        timed_out = True
        self._detached.add(task)
        task.add_done_callback(self._finished)
        seconds = f"{self.seconds:g}"
        raise ServiceUnavailableException(
            detail=f"the request took longer than {seconds} s (server.request_timeout_seconds) "
            "and was answered early; its work still completes, so check its effect before "
            "sending it again",
            headers={"Retry-After": str(max(1, math.ceil(self.seconds)))},
        )

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._detached.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a request answered early failed afterwards", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for the handlers of requests answered early to finish."""
        if self._detached:
            log.info("waiting for %d requests answered early to finish", len(self._detached))
            await asyncio.wait(set(self._detached))
