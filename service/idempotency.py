"""Idempotency-Key support for POST endpoints that create a resource (jobs, datasets, symbolic jobs).

A client that retries a POST with the same `Idempotency-Key` gets the resource the first request
made instead of a second one. The key is scoped to (tenant, endpoint); the request body is
fingerprinted, and reusing a key with a different body is an error (422, as the IETF
Idempotency-Key draft recommends) rather than a silent replay of something the client did not ask for.

Usage from a domain function (one transaction for the resource and its record):

    fingerprint = idempotency.fingerprint(body.model_dump(mode="json"))
    if key and (existing := idempotency.lookup(session, tenant, ENDPOINT, key, fingerprint)):
        return load(existing)
    ... session.add(resource) ...
    if key:
        idempotency.remember(session, tenant, ENDPOINT, key, fingerprint, resource.id, status_code=202)
    if winner := idempotency.commit_or_replay(session, tenant, ENDPOINT, key, fingerprint):
        return load(winner)  # a concurrent request with the same key committed first

On SQLite the lookup runs inside a BEGIN IMMEDIATE transaction, so two requests with the same key
are serialised. On PostgreSQL both may pass the lookup; the second insert then violates the record's
primary key, and `commit_or_replay` turns that into a replay of the winner's resource.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated, Any

from fastapi import Header
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import InvalidInput
from service.models import IdempotencyRecord

log = logging.getLogger(__name__)

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
