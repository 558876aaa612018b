"""Erasure routes: the MVP's backend erases a user when their account is deleted (service key), and a user
may erase their own data (their JWT). Both answer what was erased, as counts (`jobs.stewardship`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from litestar import delete
from litestar.params import Parameter

from xenios_ai.api.auth import require_user
from xenios_ai.api.deps import PrincipalDep, Services, ServicesDep
from xenios_ai.jobs.stewardship import ErasureCounts, erase_user

UserId = Annotated[str, Parameter(min_length=1, max_length=255, description="The user's id (the JWT's sub)")]


class ErasureOut(msgspec.Struct, kw_only=True):
    erasure_id: UUID
    """The audit record of this erasure."""
    erased_at: datetime
    erased: ErasureCounts
    """What was removed (zeros when nothing was left: erasing again is harmless)."""


async def _erase(services: Services, user_id: str, requested_by: Literal["service", "user"]) -> ErasureOut:
    erasure = await erase_user(
        services.jobs, user_id, requested_by=requested_by, other_keys=services.limiter.keys_of(user_id)
    )
    return ErasureOut(erasure_id=erasure.erasure_id, erased_at=erasure.erased_at, erased=erasure.counts)


_DESCRIPTION = (
    "Cancels the user's running jobs, then deletes their jobs (queued ones never run), uploads, results and "
    "stored files, follow-ups, webhook delivery records, job log lines, and the text of their stored LLM "
    "requests; their usage rows keep only numbers (tokens, cost, model, task) under an irreversible "
    "pseudonym. Idempotent: a second call answers zeros."
)


@delete(
    "/users/{user_id:str}/data",
    status_code=200,
    tags=["stewardship"],
    security=[{"apiKey": []}],
    summary="Erase everything held about a user (service key: the MVP's backend, on account deletion)",
    description=_DESCRIPTION,
)
async def erase_user_data(user_id: UserId, services: ServicesDep) -> ErasureOut:
    return await _erase(services, user_id, "service")


@delete(
    "/me/data",
    status_code=200,
    guards=[require_user],
    tags=["stewardship"],
    security=[{"apiKey": [], "supabaseJWT": []}],
    summary="Erase everything held about the caller (the user's JWT)",
    description=_DESCRIPTION,
)
async def erase_my_data(services: ServicesDep, principal: PrincipalDep) -> ErasureOut:
    return await _erase(services, principal.user_id, "user")
