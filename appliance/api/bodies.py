"""Request bodies decoded strictly, straight from their bytes, by msgspec.

Litestar decodes a body to plain JSON values and then converts them to the handler's type in
msgspec's lax mode, which takes ``"5"`` for an integer and ``0`` for a boolean. The published
schema says otherwise, so request Structs are decoded here instead, with msgspec's default
(strict) rules: a value of the wrong type is a 400 like any other value the schema rejects.

Litestar's hook for decoding a body is a DTO; ``StrictBodies`` attaches one to every handler whose
body is a request Struct.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.exceptions import ValidationException
from litestar.plugins import SerializationPlugin
from litestar.typing import FieldDefinition

from appliance.schemas.base import Request

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.connection import Request as HTTPRequest
    from litestar.dto._backend import DTOBackend
    from litestar.openapi.spec import Reference, Schema

T = TypeVar("T")

#: msgspec's messages end with where the error is: "Expected `int`, got `str` - at `$.top_k`".
_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


class StrictBody(AbstractDTO[T]):
    """Decode a JSON body into ``T`` with msgspec's strict rules; describe it as ``T`` itself."""

    @classmethod
    def generate_field_definitions(
        cls,
        model_type: type[Any],  # noqa: ARG003 - Litestar's signature
    ) -> Generator[DTOFieldDefinition, None, None]:
        """Declare no transfer fields: the body is decoded into ``T`` directly."""
        yield from ()

    @classmethod
    def detect_nested_field(
        cls,
        field_definition: FieldDefinition,  # noqa: ARG003 - Litestar's signature
    ) -> bool:
        """Nothing is nested: there is no transfer model."""
        return False

    @classmethod
    def create_for_field_definition(
        cls,
        field_definition: FieldDefinition,
        handler_id: str,
        backend_cls: type[DTOBackend] | None = None,
    ) -> None:
        """Build nothing: decoding needs only ``T``."""

    @classmethod
    def create_openapi_schema(
        cls,
        field_definition: FieldDefinition,
        handler_id: str,  # noqa: ARG003 - Litestar's signature
        schema_creator: SchemaCreator,
    ) -> Reference | Schema:
        """Describe the body as its Struct, the same component any other route refers to."""
        return schema_creator.for_field_definition(field_definition)

    def decode_bytes(self, value: bytes) -> Any:
        """Decode the body.

        Raises:
            ValidationException: The body is not JSON, or not a valid ``T`` (400), with
                Litestar's usual ``extra``: the message, the field's path and its source.

        """
        request = cast("HTTPRequest[Any, Any, Any]", self.asgi_connection)
        try:
            return msgspec.json.decode(value, type=self.model_type)
        except msgspec.ValidationError as e:
            message = str(e)
            at = _AT.search(message)
            raise ValidationException(
                detail=f"Validation failed for {request.method} {request.url.path}",
                extra=[
                    {
                        "message": message[: at.start()] if at else message,
                        "key": (at.group("path") if at else "") or "data",
                        "source": "body",
                    }
                ],
            ) from e
        except msgspec.DecodeError as e:
            raise ValidationException(detail=f"the request body is not valid JSON: {e}") from e

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        """Decode values that arrived otherwise (a form) by the same rules."""
        return self.decode_bytes(msgspec.json.encode(value))


class StrictBodies(SerializationPlugin):
    """Decode every request Struct body with ``StrictBody``."""

    def supports_type(self, field_definition: FieldDefinition) -> bool:
        """Whether the handler's body is a request Struct."""
        return field_definition.is_subclass_of(Request)

    def create_dto_for_type(self, field_definition: FieldDefinition) -> type[AbstractDTO[Any]]:
        """Return the strict decoder of the body's Struct."""
        return StrictBody[field_definition.annotation]  # type: ignore[name-defined]
