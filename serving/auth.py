"""API keys: created and revoked in ``model_registry.api_keys``, stored hashed, checked in constant time.

A key reads ``ppk_<key id>_<secret>``. Only the key id and the SHA-256 of the whole key are
stored (the secret has 256 bits of randomness, so a fast hash is enough). The server holds
the active keys in a :class:`KeyRing` refreshed from the database, so a revocation takes
effect within ``REFRESH_SECONDS`` and a database outage keeps the last known keys working.
An unknown key may be one created since the last read: it triggers a read of its own, but
one at a time and at most once per ``MISS_REFRESH_SECONDS`` since the last attempt (failed
ones included), so a storm of bad keys during an outage costs one connection a second.
Roles: ``predict`` (prediction endpoints) and ``admin`` (everything, including ``/admin``).
Admin actions are written to ``model_registry.audit_log``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg2

from price_platform.warehouse import connect

log = logging.getLogger(__name__)

ROLES = ("predict", "admin")
REFRESH_SECONDS = 10.0
#: Least time between the start of one read of the keys and a read asked for by an unknown key.
MISS_REFRESH_SECONDS = 1.0
HEADER = "X-API-Key"
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key id (``None`` with auth switched off) and its role."""

    key_id: str | None
    role: str

    def may(self, role: str) -> bool:
        return self.role == "admin" or self.role == role


ANONYMOUS_ADMIN = Principal(key_id=None, role="admin")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    parts = key.split("_")
    return parts[1] if len(parts) == 3 and parts[0] == "ppk" and parts[1] else None


def create_key(dsn: str, role: str, description: str = "") -> tuple[str, str]:
    """Store a new key's hash; return (key id, key). The key itself is shown once and never stored."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    key_id = secrets.token_hex(6)
    key = f"ppk_{key_id}_{secrets.token_urlsafe(32).replace('_', '-')}"
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "insert into model_registry.api_keys (key_id, key_hash, role, description) values (%s, %s, %s, %s)",
            (key_id, hash_key(key), role, description),
        )
    return key_id, key


def revoke_key(dsn: str, key_id: str) -> bool:
    """Mark a key revoked; False when there is no active key with that id."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "update model_registry.api_keys set revoked_at = now() where key_id = %s and revoked_at is null", (key_id,)
        )
        return cursor.rowcount == 1


def list_keys(dsn: str) -> list[dict[str, Any]]:
    """Every key's id, role, description and dates (never its hash)."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select key_id, role, description, created_at, revoked_at from model_registry.api_keys order by created_at"
        )
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class AuditUnavailable(RuntimeError):
    """The audit log cannot be written; the message is fit for the caller (the database's own text is only logged)."""


def audit(dsn: str, actor: str, action: str, detail: dict[str, Any]) -> None:
    """Write one admin action to ``model_registry.audit_log``; raise :class:`AuditUnavailable` when the database fails.

    The database's error text (host, user, database, sometimes a statement) goes to the server
    log, not into the exception an admin caller is answered with.
    """
    try:
        with connect(dsn) as connection, connection.cursor() as cursor:
            cursor.execute(
                "insert into model_registry.audit_log (actor, action, detail) values (%s, %s, %s)",
                (actor, action, json.dumps(detail, default=str)),
            )
    except psycopg2.Error as error:
        log.error("cannot write the audit log: %s", str(error).strip())
        raise AuditUnavailable("the platform database did not take it (its message is in the server log)") from None


@dataclass
class KeyRing:
    """The active keys (id -> hash, role), as last read from the database."""

    dsn: str | None
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    loaded_at: float = 0.0
    #: When the last read began, whether it succeeded or not.
    attempted_at: float = float("-inf")

    def __post_init__(self) -> None:
        # Not fields: the read's lock and pending future are no part of the key ring's state.
        self._reading = threading.Lock()
        self._miss_read: asyncio.Future | None = None

    def refresh(self) -> bool:
        """Re-read the active keys; on a database error keep the ones known.

        One read at a time: while another runs this returns at once. False when nothing was read.
        """
        if self.dsn is None or not self._reading.acquire(blocking=False):
            return False
        try:
            self.attempted_at = time.monotonic()
            with connect(self.dsn) as connection, connection.cursor() as cursor:
                cursor.execute("select key_id, key_hash, role from model_registry.api_keys where revoked_at is null")
                self.keys = {key_id: (key_hash, role) for key_id, key_hash, role in cursor.fetchall()}
            self.loaded_at = time.monotonic()
            return True
        except psycopg2.Error as error:
            log.warning("cannot refresh API keys (keeping %d known): %s", len(self.keys), str(error).strip())
            return False
        finally:
            self._reading.release()

    async def refresh_after_miss(self) -> None:
        """Re-read the keys for a key not known (it may be new), unless a read began under ``MISS_REFRESH_SECONDS`` ago.

        Concurrent callers share one read (run in a thread); runs on the event loop, so the
        decision to start one cannot race.
        """
        if self.dsn is None:
            return
        if self._miss_read is None:
            if time.monotonic() - self.attempted_at < MISS_REFRESH_SECONDS:
                return
            self.attempted_at = time.monotonic()
            self._miss_read = asyncio.ensure_future(asyncio.to_thread(self.refresh))
            self._miss_read.add_done_callback(self._miss_read_done)
        await asyncio.shield(self._miss_read)

    def _miss_read_done(self, _: asyncio.Future) -> None:
        self._miss_read = None

    def check(self, presented: str | None) -> Principal | None:
        """The principal of a presented key, or ``None``; the hash comparison takes constant time."""
        if not presented:
            return None
        key_id = key_id_of(presented)
        stored_hash, role = self.keys.get(key_id or "", (_DUMMY_HASH, ""))
        matches = hmac.compare_digest(hash_key(presented), stored_hash)
        return Principal(key_id=key_id, role=role) if matches and role else None
