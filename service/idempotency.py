"""Idempotency-Key support for the POST endpoints that create a resource (datasets, jobs, symbolic
jobs, discoveries, batches).

A client that retries a POST with the same `Idempotency-Key` gets the resource the first request
made instead of a second one. The key is scoped to (tenant, endpoint); the request body is
fingerprinted, and reusing a key with a different body is an error (422, as the IETF
Idempotency-Key draft recommends) rather than a silent replay of something the client did not ask for.

Every creator goes through `create_once` (one transaction for the resource and its record):

    job, created = idempotency.create_once(
        session, tenant, ENDPOINT, key, fingerprint(body.model_dump(mode="json")),
        create=lambda: add_job(...),          # adds the resource to the session, returns it (not committed)
        load=lambda job_id: get_job(...),     # the resource an earlier request made
    )

On SQLite the lookup runs inside a BEGIN IMMEDIATE transaction, so two requests with the same key
are serialised. On PostgreSQL both may pass the lookup; the second insert then violates the record's
primary key, and `commit_or_replay` turns that into a replay of the winner's resource.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Header
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import InvalidInput
from service.models import IdempotencyRecord

log = logging.getLogger(__name__)


class _Resource(Protocol):
    id: str


R = TypeVar("R", bound=_Resource)

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", min_length=1, max_length=200,
        description="Retrying a POST with the same key and body returns the first answer instead of creating twice.",
    ),
]


def fingerprint(payload: Any) -> str:
    """sha256 of the canonical JSON of a (validated, defaults filled in) request body."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def lookup(session: Session, tenant: str, endpoint: str, key: str, request_hash: str) -> str | None:
    """The id of the resource an earlier request with this key made, or None for a new key.

    Raises InvalidInput when the key was used with a different body."""
    record = session.get(IdempotencyRecord, (tenant, endpoint, key))
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise InvalidInput(
            f"Idempotency-Key {key!r} was already used with a different request body; use a new key",
            field="Idempotency-Key",
        )
    log.info("idempotent replay of %s (key %r) -> %s", endpoint, key, record.resource_id)
    return record.resource_id


def remember(
    session: Session, tenant: str, endpoint: str, key: str, request_hash: str, resource_id: str, *,
    status_code: int = 201,
) -> None:
    """Record the answer to a request with a key, in the caller's transaction (it commits)."""
    session.add(IdempotencyRecord(
        tenant_id=tenant, endpoint=endpoint, key=key, request_hash=request_hash,
        status_code=status_code, resource_id=resource_id,
    ))


def commit_or_replay(session: Session, tenant: str, endpoint: str, key: str | None, request_hash: str) -> str | None:
    """Commit; when a concurrent request with the same key won the race, roll back and return the
    winner's resource id instead (None: the commit went through)."""
    try:
        session.commit()
        return None
    except IntegrityError:
        session.rollback()
        if key is None:
            raise
        winner = lookup(session, tenant, endpoint, key, request_hash)
        if winner is None:  # the integrity error was something else
            raise
        session.commit()
        return winner


def create_once(
    session: Session, tenant: str, endpoint: str, key: str | None, request_hash: str, *,
    create: Callable[[], R], load: Callable[[str], R], status_code: int = 202, build_unlocked: bool = False,
) -> tuple[R, bool]:
    """Create a resource once per Idempotency-Key: (the resource, True) when this call created it,
    (the earlier request's resource, False) on a replay or when a concurrent request with the same key
    won the race. Without a key it always creates.

    `create` adds the resource to the session (it may raise; nothing is committed) and `load` reads one
    by id. `build_unlocked`: end the lookup's transaction before `create`, for creators that compute
    a while before they write (on SQLite the lookup holds the write lock); the race is then caught at
    the commit instead."""
    if key:
        if (earlier := lookup(session, tenant, endpoint, key, request_hash)) is not None:
            return load(earlier), False
        if build_unlocked:
            session.rollback()
    resource = create()
    if key:
        remember(session, tenant, endpoint, key, request_hash, resource.id, status_code=status_code)
    if (winner := commit_or_replay(session, tenant, endpoint, key, request_hash)) is not None:
        return load(winner), False
    return resource, True
