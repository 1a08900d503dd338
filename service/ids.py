"""Resource ids: a prefix, then a millisecond timestamp and randomness, so ids sort by creation time
(cursor pagination orders by id)."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"
