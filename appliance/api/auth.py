"""Access control: every request's API key checked against its route's access level.

Routes are admin-only unless their handler's ``opt`` says otherwise (``opt=CLIENT_ACCESS`` or
``opt=PUBLIC_ACCESS``), so a new endpoint is closed until it is opened on purpose. Without any
configured key every request is let through (the appliance then serves on loopback only, see
``appliance.security.check_exposure``), and the check is not installed at all.
"""

from __future__ import annotations

from typing import Any

from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import ASGIMiddleware
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from litestar.types import ASGIApp, Receive, Scope, Send

from appliance.security import KeyRing, Role, presented_key

#: The ``opt`` key that holds a route's access level.
ACCESS = "access"
#: Routes any key, or none, may call (``/health``).
PUBLIC_ACCESS: dict[str, Any] = {ACCESS: "public"}
#: Routes a client key may call (recommend, items like one item, record feedback).
CLIENT_ACCESS: dict[str, Any] = {ACCESS: "client"}

#: The OpenAPI description: the interactive docs under this path stay open.
SCHEMA_PATH = "/schema"

_HOW = "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


class AccessMiddleware(ASGIMiddleware):
    """Let a request through only with a key whose role may call its route.

    A middleware rather than a route guard: Litestar copies the route handler for each guard
    call, which cost more than the check itself. It runs innermost, where a guard would.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, keyring: KeyRing) -> None:
        """Check keys against ``keyring``."""
        self._keyring = keyring

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Pass the request on, or refuse it.

        Raises:
            NotAuthorizedException: No key, or a key that is not configured (401).
            PermissionDeniedException: A client key on an admin route (403).

        """
        access = scope["route_handler"].opt.get(ACCESS)
        if access != PUBLIC_ACCESS[ACCESS] and not scope["path"].startswith(SCHEMA_PATH):
            self._check(access, presented_key(Headers.from_scope(scope)))
        await next_app(scope, receive, send)

    def _check(self, access: str | None, key: str | None) -> None:
        challenge = {"WWW-Authenticate": "Bearer"}
        if key is None:
            raise NotAuthorizedException(
                detail=f"this endpoint needs an API key: {_HOW}, with a key from auth.client_keys "
                "(recommendations and feedback) or auth.admin_keys (everything)",
                headers=challenge,
            )
        role = self._keyring.role_of(key)
        if role is None:
            raise NotAuthorizedException(
                detail=f"the API key sent is not a configured key: {_HOW}, with a key listed (or "
                "whose sha256 is listed) in auth.client_keys or auth.admin_keys",
                headers=challenge,
            )
        if role < Role.ADMIN and access != CLIENT_ACCESS[ACCESS]:
            raise PermissionDeniedException(
                detail="this endpoint needs an admin key (auth.admin_keys); the key sent is a "
                "client key, which may call POST /recommendations, GET /items/{item_id}/similar "
                "and POST /feedback only"
            )


def openapi_components() -> Components:
    """Describe the two ways of sending a key as OpenAPI security schemes."""
    return Components(
        security_schemes={
            "bearer": SecurityScheme(type="http", scheme="bearer"),
            "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
        }
    )


#: Either scheme is accepted on every route but /health.
OPENAPI_SECURITY: list[SecurityRequirement] = [{"bearer": []}, {"apiKey": []}]
