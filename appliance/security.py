"""API keys: who may call what, and whether the appliance may serve without keys.

Keys are configured in ``auth.client_keys`` and ``auth.admin_keys``, each entry either the key
itself or ``sha256:<hex>`` of it. A presented key is hashed and compared with every entry in
constant time, so neither the comparison nor the configuration reveals a key.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping, Sequence

from appliance.errors import ConfigError
from appliance.settings import ADMIN_KEY_ENV, AuthSettings, Settings

HASHED_PREFIX = "sha256:"
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


class Role(enum.IntEnum):
    """What a key may do; a higher role may do everything a lower one may."""

    CLIENT = 1
    ADMIN = 2


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _entry_digest(setting: str, position: int, entry: str) -> bytes:
    if not entry.startswith(HASHED_PREFIX):
        if not entry:
            raise ConfigError(f"auth.{setting} entry {position} is empty; remove it")
        return _digest(entry)
    hexdigest = entry.removeprefix(HASHED_PREFIX)
    if not _HEX_DIGEST.fullmatch(hexdigest):
        # The entry itself is not shown: it may be a key pasted in the wrong form.
        raise ConfigError(
            f"auth.{setting} entry {position} starts with {HASHED_PREFIX} but is not followed by "
            "64 hex digits; give sha256:<hex digest of the key> (printf %s KEY | sha256sum) "
            "or the key itself"
        )
    return bytes.fromhex(hexdigest)


class KeyRing:
    """The configured keys, held as SHA-256 digests only."""

    def __init__(self, auth: AuthSettings) -> None:
        """Digest every configured key.

        Raises:
            ConfigError: An entry is empty or a malformed ``sha256:`` entry.

        """
        self._entries: list[tuple[bytes, Role]] = [
            (_entry_digest(setting, n, entry), role)
            for setting, entries, role in (
                ("client_keys", auth.client_keys, Role.CLIENT),
                ("admin_keys", auth.admin_keys, Role.ADMIN),
            )
            for n, entry in enumerate(entries, start=1)
        ]

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (without keys, every request is let through)."""
        return bool(self._entries)

    def role_of(self, key: str) -> Role | None:
        """Return the highest role of ``key``, or ``None`` when it is not a configured key."""
        presented = _digest(key)
        role: Role | None = None
        # Every entry is compared, whatever matched before, so the time taken does not depend on
        # which entry (if any) matches.
        for digest, entry_role in self._entries:
            if hmac.compare_digest(presented, digest) and (role is None or entry_role > role):
                role = entry_role
        return role


def presented_key(headers: Mapping[str, str]) -> str | None:
    """Return the key a request carries: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


def key_fingerprint(key: str) -> str:
    """Name a key shortly and irreversibly, to tell keys apart without storing them."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Refuse to serve a network without keys, unless told to.

    Raises:
        ConfigError: ``server.host`` is not a loopback address, no key is configured and
            ``auth.allow_unauthenticated`` is false.

    """
    auth = settings.auth
    host = settings.server.host
    if is_loopback(host) or auth.client_keys or auth.admin_keys or auth.allow_unauthenticated:
        return
    raise ConfigError(
        f"server.host is {host}, which other machines can reach, and no API keys are configured: "
        "set auth.admin_keys and/or auth.client_keys (APPLIANCE_AUTH__ADMIN_KEYS, "
        "APPLIANCE_AUTH__CLIENT_KEYS; preferably sha256:<hex digest of the key>), or set "
        "auth.allow_unauthenticated = true (APPLIANCE_AUTH__ALLOW_UNAUTHENTICATED=true) to serve "
        "without keys behind a proxy that authenticates, or bind 127.0.0.1"
    )


def admin_key(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """Return the key admin commands send: ``APPLIANCE_ADMIN_KEY``, else a plain admin key."""
    if environ.get(ADMIN_KEY_ENV):
        return environ[ADMIN_KEY_ENV]
    plain: Sequence[str] = [k for k in settings.auth.admin_keys if not k.startswith(HASHED_PREFIX)]
    return plain[0] if plain else None
