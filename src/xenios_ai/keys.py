"""Constant-time matching of a presented key against the configured ones (API keys, the metrics key)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable


def key_matches(given: str | None, keys: Iterable[str]) -> bool:
    """Whether ``given`` equals one of ``keys``: constant time in the key's content, every key compared."""
    candidates = tuple(keys)
    if not given or not candidates:
        return False
    supplied = given.encode()
    matched = False
    for key in candidates:
        matched |= hmac.compare_digest(supplied, key.encode())
    return matched
