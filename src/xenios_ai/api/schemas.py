"""The base of every request and response Struct of the API."""

from __future__ import annotations

import msgspec


class Schema(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Request bodies reject unknown fields (a typo is a 422, not a silently ignored option)."""
