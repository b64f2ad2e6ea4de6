"""Access control: a guard on every route, checking the API key against the route's access level.

Routes are admin-only unless their handler's ``opt`` says otherwise (``opt=CLIENT_ACCESS`` or
``opt=PUBLIC_ACCESS``), so a new endpoint is closed until it is opened on purpose. Without any
configured key every request is let through (the appliance then serves on loopback only, see
``appliance.security.check_exposure``).
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme

from appliance.security import KeyRing, Role, presented_key

#: The ``opt`` key that holds a route's access level.
ACCESS = "access"
#: Routes any key, or none, may call (``/health``).
PUBLIC_ACCESS: dict[str, Any] = {ACCESS: "public"}
#: Routes a client key may call (recommend, record feedback).
CLIENT_ACCESS: dict[str, Any] = {ACCESS: "client"}

#: The OpenAPI description: the interactive docs under this path stay open.
SCHEMA_PATH = "/schema"

_HOW = "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def keyring_of(connection: ASGIConnection[Any, Any, Any, Any]) -> KeyRing:
    """Return the application's configured keys."""
    keyring: KeyRing = connection.app.state.keyring
    return keyring


async def require_key(
    connection: ASGIConnection[Any, Any, Any, Any], route_handler: BaseRouteHandler
) -> None:
    """Let a request through only with a key whose role may call the route.

    A coroutine although it never waits: Litestar runs a plain function guard in a worker
    thread, and that hop costs every request more than the check itself.

    Raises:
        NotAuthorizedException: No key, or a key that is not configured (401).
        PermissionDeniedException: A client key on an admin route (403).

    """
    keyring = keyring_of(connection)
    access = route_handler.opt.get(ACCESS)
    if (
        not keyring.enabled
        or access == PUBLIC_ACCESS[ACCESS]
        or connection.scope["path"].startswith(SCHEMA_PATH)
    ):
        return
    key = presented_key(connection.headers)
    challenge = {"WWW-Authenticate": "Bearer"}
    if key is None:
        raise NotAuthorizedException(
            detail=f"this endpoint needs an API key: {_HOW}, with a key from auth.client_keys "
            "(recommendations and feedback) or auth.admin_keys (everything)",
            headers=challenge,
        )
    role = keyring.role_of(key)
    if role is None:
        raise NotAuthorizedException(
            detail=f"the API key sent is not a configured key: {_HOW}, with a key listed (or "
            "whose sha256 is listed) in auth.client_keys or auth.admin_keys",
            headers=challenge,
        )
    if role < Role.ADMIN and access != CLIENT_ACCESS[ACCESS]:
        raise PermissionDeniedException(
            detail="this endpoint needs an admin key (auth.admin_keys); the key sent is a client "
            "key, which may call POST /recommendations and POST /feedback only"
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
