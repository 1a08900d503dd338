"""API keys, no HTTP: create, list, revoke (the `kan-service keys` commands) and authenticate.

A key is `kan_<id>.<secret>`: the id (`key_...`) is the lookup prefix, the secret 32 random bytes
(url-safe base64). Only the secret's SHA-256 is stored; authentication reads the row by id and
compares digests in constant time. A slow password hash would add nothing against a 256-bit random
secret, and would cost every request. The whole key is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import InvalidInput, NotFound, Unauthorized
from service.ids import new_id
from service.models import DEFAULT_TENANT, ApiKey, Scope, utcnow

log = logging.getLogger(__name__)

TOKEN_PREFIX = "kan_"
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOKEN_PATTERN = re.compile(r"^kan_(key_[0-9a-f]{28})\.([A-Za-z0-9_-]{43})$")
# Unauthorized answers carry this header (RFC 6750): the client should retry with a bearer token
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="kan-service"'}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant whose data they see, their scope, and their key (None when
    authentication is off: every caller is then the default tenant with every right)."""

    tenant_id: str
    scope: Scope
    key_id: str | None = None


ANONYMOUS = Principal(tenant_id=DEFAULT_TENANT, scope=Scope.admin)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    session: Session, *, scope: Scope, tenant: str = DEFAULT_TENANT, name: str | None = None
) -> tuple[ApiKey, str]:
    """A new key for `tenant`: (its row, the token to hand to the client, shown only now)."""
    if not TENANT_PATTERN.match(tenant):
        raise InvalidInput("a tenant is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
                           field="tenant")
    secret = secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), tenant_id=tenant, name=name, scope=scope, secret_hash=_digest(secret))
    session.add(row)
    session.commit()
    log.info("API key %s created (tenant %s, scope %s)", row.id, tenant, scope.value)
    return row, f"{TOKEN_PREFIX}{row.id}.{secret}"


def list_keys(session: Session, tenant: str | None = None) -> list[ApiKey]:
    """Every key (of `tenant`, when given), oldest first, revoked ones included."""
    stmt = select(ApiKey).order_by(ApiKey.id)
    if tenant is not None:
        stmt = stmt.where(ApiKey.tenant_id == tenant)
    return list(session.scalars(stmt))


def revoke_key(session: Session, key_id: str) -> ApiKey:
    """Revoke a key: API processes refuse it once their cached lookup of it is older than
    `lookup_cache_ttl_s` (service.api.deps.get_principal). Revoking twice keeps the first date."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound("API key", key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
        log.info("API key %s revoked", key_id)
    return row


def authenticate(session: Session, token: str) -> Principal:
    """The principal a bearer token stands for; Unauthorized for a malformed, unknown or revoked key.
    The answer never says which, and costs a digest comparison whenever the token is well-formed."""
    match = _TOKEN_PATTERN.match(token)
    if match is None:
        raise Unauthorized("the bearer token is not a kan-service API key", headers=CHALLENGE)
    key_id, secret = match.groups()
    row = session.get(ApiKey, key_id)
    expected = row.secret_hash if row is not None else _digest("")
    valid = hmac.compare_digest(_digest(secret), expected)
    if row is None or not valid or row.revoked_at is not None:
        raise Unauthorized("the API key is unknown or revoked", headers=CHALLENGE)
    return Principal(tenant_id=row.tenant_id, scope=row.scope, key_id=row.id)
