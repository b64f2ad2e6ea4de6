"""The published OpenAPI description says what the server enforces.

Two Litestar plugins:

- ``WireSchemas`` describes every msgspec Struct with msgspec's own JSON Schema. msgspec decodes
  the bodies (strictly, see ``appliance.api.bodies``), so its schema is the exact rule:
  ``additionalProperties: false`` where a Struct forbids unknown fields, ``anyOf`` for unions
  (an integer is also a number), and every constraint, including those Litestar's own
  translation drops (a minimum of 0, the bounds of a dict or of a list inside a union).
- ``ErrorAnswers`` declares on every route the errors any route may give: 400 for bad input,
  401 and 403 from the key check, 413 for a body over the size limit, 429 from the rate limit,
  503 when an answer takes too long or a store fails. A route declares the errors only it gives
  (404, 409) with ``responses=error_responses(...)``.

Every error answer has the body ``ErrorBody``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect as mi
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType, Reference, Schema
from litestar.plugins import OpenAPISchemaPlugin, ReceiveRoutePlugin
from litestar.routes import BaseRoute, HTTPRoute
from litestar.typing import FieldDefinition

from appliance.api.auth import ACCESS, CLIENT_ACCESS, PUBLIC_ACCESS
from appliance.api.limits import NOT_RATE_LIMITED
from appliance.schemas.base import ErrorBody

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

_COMPONENTS = "#/components/schemas/"
_SCHEMA_FIELDS = set(Schema.__dataclass_fields__)
#: JSON Schema keywords whose value is a schema, a list of schemas, or a map of them.
_ONE_SCHEMA = {"items", "additionalProperties", "propertyNames", "contains", "not"}
_SCHEMA_LIST = {"anyOf", "oneOf", "allOf", "prefixItems"}
_SCHEMA_MAP = {"properties", "patternProperties", "dependentSchemas"}

#: What each error status means, for every route that may answer it.
_MEANING: dict[HTTPStatus, str] = {
    HTTPStatus.BAD_REQUEST: "The request does not match this schema, or asks for something "
    "that cannot be done; `detail` (and, for a field, `extra`) says what to change",
    HTTPStatus.UNAUTHORIZED: "No API key, or one that is not configured (when keys are configured)",
    HTTPStatus.FORBIDDEN: "A client key on an endpoint that needs an admin key",
    HTTPStatus.NOT_FOUND: "The user, item or logged response the request names does not exist",
    HTTPStatus.CONFLICT: "The appliance's state does not allow it now (an empty catalog, a "
    "re-ranker that may not be switched); `detail` says why",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "The body is larger than server.max_body_bytes",
    HTTPStatus.TOO_MANY_REQUESTS: "More than server.rate_limit_per_minute requests in a minute "
    "from this key; retry after the Retry-After header's seconds",
    HTTPStatus.SERVICE_UNAVAILABLE: "Not answered within server.request_timeout_seconds (the "
    "work still completes), or a store, the index or a model failed; retry later",
}


def error_responses(*statuses: HTTPStatus) -> dict[int, ResponseSpec]:
    """Declare error answers with the ``ErrorBody`` body, for a route's ``responses``."""
    return {
        status.value: ResponseSpec(
            data_container=ErrorBody, description=_MEANING[status], generate_examples=False
        )
        for status in statuses
    }


def _common_errors(handler: HTTPRouteHandler) -> tuple[HTTPStatus, ...]:
    # The same route options the key check and the limits read.
    access = handler.opt.get(ACCESS)
    takes_input = any(
        name not in handler.resolve_dependencies()
        for name in handler.parsed_fn_signature.parameters
    )
    statuses = [HTTPStatus.SERVICE_UNAVAILABLE]
    if takes_input:
        statuses.append(HTTPStatus.BAD_REQUEST)
    if handler.parsed_data_field is not None:
        statuses.append(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    if access != PUBLIC_ACCESS[ACCESS]:
        statuses.append(HTTPStatus.UNAUTHORIZED)
        if access != CLIENT_ACCESS[ACCESS]:
            statuses.append(HTTPStatus.FORBIDDEN)
    if not handler.opt.get(NOT_RATE_LIMITED):
        statuses.append(HTTPStatus.TOO_MANY_REQUESTS)
    return tuple(statuses)


class ErrorAnswers(ReceiveRoutePlugin):
    """Add the errors every route may give to each route's declared ``responses``."""

    def receive_route(self, route: BaseRoute) -> None:
        """Declare the common errors on the route's handlers (copies made for this app)."""
        if not isinstance(route, HTTPRoute):
            return
        for handler in route.route_handlers:
            handler.responses = {
                **error_responses(*_common_errors(handler)),
                **(handler.responses or {}),
            }


def _named_types(info: mi.Type, found: dict[str, type]) -> dict[str, type]:
    """Add the Structs and enums msgspec's schema of ``info`` refers to, by component name."""
    if isinstance(info, (mi.StructType, mi.EnumType)):
        if found.get(info.cls.__name__) is info.cls:
            return found
        found[info.cls.__name__] = info.cls
    children: list[mi.Type] = []
    if isinstance(info, mi.StructType):
        children = [f.type for f in info.fields]
    elif isinstance(info, mi.Metadata):
        children = [info.type]
    elif isinstance(info, mi.UnionType):
        children = list(info.types)
    elif isinstance(info, mi.CollectionType):
        children = [info.item_type]
    elif isinstance(info, mi.TupleType):
        children = list(info.item_types)
    elif isinstance(info, mi.DictType):
        children = [info.key_type, info.value_type]
    for child in children:
        _named_types(child, found)
    return found


def _field_name(keyword: str) -> str:
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", keyword).lower()
    if name not in _SCHEMA_FIELDS:
        name = f"schema_{name}"
    if name not in _SCHEMA_FIELDS:
        raise ValueError(f"msgspec's JSON Schema keyword {keyword!r} has no OpenAPI Schema field")
    return name


def _fill(schema: Schema, spec: dict[str, Any], ref: Callable[[str], Schema | Reference]) -> Schema:
    """Set ``schema``'s fields from a JSON Schema dict; ``ref`` resolves a ``$ref``'s name."""

    def convert(sub: Any) -> Any:
        if not isinstance(sub, dict):
            return sub  # true or false
        if "$ref" in sub:
            return ref(sub["$ref"].removeprefix(_COMPONENTS))
        return _fill(Schema(), sub, ref)

    for keyword, value in spec.items():
        if keyword in _ONE_SCHEMA:
            converted = convert(value)
        elif keyword in _SCHEMA_LIST:
            converted = [convert(v) for v in value]
        elif keyword in _SCHEMA_MAP:
            converted = {k: convert(v) for k, v in value.items()}
        elif keyword == "type":
            converted = OpenAPIType(value)
        else:
            converted = value
        setattr(schema, _field_name(keyword), converted)
    return schema


class WireSchemas(OpenAPISchemaPlugin):
    """Describe msgspec Structs with msgspec's JSON Schema, as shared components."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        """Whether the field is a Struct (not a union of them)."""
        return not field_definition.is_union and field_definition.is_subclass_of(msgspec.Struct)

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        """Register the Struct's schema; Structs and enums it holds are registered in turn."""
        struct = field_definition.annotation
        (top,), components = msgspec.json.schema_components(
            [struct], ref_template=_COMPONENTS + "{name}"
        )
        name = top["$ref"].removeprefix(_COMPONENTS)
        named = _named_types(mi.type_info(struct), {})

        def ref(component: str) -> Schema | Reference:
            if component not in named:
                # msgspec spells out the module when two types share a name: rename one.
                raise ValueError(f"{component!r} in the schema of {struct!r} names no one type")
            return schema_creator.for_field_definition(
                FieldDefinition.from_annotation(named[component])
            )

        # Registered before its fields are converted, so a Struct that holds itself refers to it.
        schema = schema_creator.schema_registry.get_schema_for_field_definition(field_definition)
        return _fill(schema, components[name], ref)
