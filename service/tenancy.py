"""Tenant isolation in one place: every read of a tenant-owned row goes through these two helpers.

Datasets, jobs and models belong to the tenant of the API key that created them. Another tenant's
row is reported exactly like a row that does not exist (404, never 403), so ids cannot be probed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Delete, Select, Update
from sqlalchemy.orm import Mapped, Session
from sqlalchemy.orm.interfaces import ORMOption

from service.errors import NotFound


class TenantOwned(Protocol):
    tenant_id: Mapped[str]


T = TypeVar("T", bound=TenantOwned)
S = TypeVar("S", Select[Any], Update, Delete)


def get_owned(
    session: Session, entity: type[T], tenant: str, id: str, *, resource: str,
    options: Sequence[ORMOption] = (), populate_existing: bool = False,
) -> T:
    """The `entity` row `id` when it belongs to `tenant`; NotFound(resource, id) otherwise."""
    row = session.get(entity, id, options=list(options), populate_existing=populate_existing)
    if row is None or row.tenant_id != tenant:
        raise NotFound(resource, id)
    return row


def owned(stmt: S, entity: type[TenantOwned], tenant: str) -> S:
    """`stmt` restricted to `tenant`'s rows of `entity` (for listings and bulk statements)."""
    return stmt.where(entity.tenant_id == tenant)
