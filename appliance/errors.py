"""The appliance's error hierarchy.

Every failure that a caller can act on is an ``ApplianceError``. The API maps each class to an
HTTP status with one handler; the CLI prints the message. A message always says what to fix.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Root of every error the appliance raises on purpose."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(ApplianceError):
    """The request is well-formed but asks for something the appliance cannot do."""

    status_code = 400


class NotFoundError(ApplianceError):
    """A user, item or other resource named in the request does not exist."""

    status_code = 404


class ConflictError(ApplianceError):
    """The request cannot be served in the appliance's current state (e.g. an empty catalog)."""

    status_code = 409


class TooLargeError(ApplianceError):
    """The request body is larger than a configured limit allows."""

    status_code = 413


class NotReadyError(ApplianceError):
    """A component the request needs is not loaded yet."""

    status_code = 503


class BackendError(ApplianceError):
    """A store or index failed on its side (disk full, damaged files); retry once fixed."""

    status_code = 503


class ConfigError(ApplianceError):
    """The configuration or the files it points at are unusable; raised at start-up."""


class ModelFileError(ConfigError):
    """A model file is missing or does not match its manifest entry."""
