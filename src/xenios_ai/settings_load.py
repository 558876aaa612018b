"""Settings from the environment: `load_settings` reads it (and `.env` in dev) into `Settings`, and
`check_settings` stops start-up on what the service cannot run with, naming the variable.

Each field's environment variable is its name in upper case (``database_url`` <- ``DATABASE_URL``);
``LLM_MODELS``, ``LLM_PROVIDER_PREFERENCES`` and ``BUDGET_USD_PER_TASK_MONTH`` are JSON.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
from dotenv import dotenv_values

from xenios_ai.settings import Secret, Settings, SettingsError

__all__ = ["check_settings", "load_settings", "webhook_key"]

_REQUIRED_IN_PRODUCTION = ("xenios_backend_api_key", "database_url", "redis_url", "openrouter_api_key")


_JSON_SETTINGS = frozenset({"llm_models", "llm_provider_preferences", "budget_usd_per_task_month"})
"""Settings given as JSON in the environment."""


def _dec_hook(type_: type, obj: Any) -> Any:
    """msgspec's decode hook: a Secret from a string. Anything else is a TypeError, which msgspec turns into
    a ValidationError naming the field (so load_settings names the variable)."""
    if type_ is Secret and isinstance(obj, str):
        return Secret(obj)
    raise TypeError(f"expected a string for {type_.__name__}, got {type(obj).__name__}")


def load_settings(
    environ: Mapping[str, str] | None = None, *, dotenv: bool = True, **overrides: Any
) -> Settings:
    """Build Settings from ``environ`` (default: os.environ plus ``.env`` when present) and overrides."""
    if environ is None:
        environ = dict(os.environ)
        if dotenv and Path(".env").is_file():
            environ = {k: v for k, v in dotenv_values(".env").items() if v is not None} | environ
    fields = {f.name for f in msgspec.structs.fields(Settings)}
    raw: dict[str, Any] = {}
    for key, value in environ.items():
        name = key.lower()
        if name in fields and value != "":
            raw[name] = msgspec.json.decode(value) if name in _JSON_SETTINGS else value
    raw.update(overrides)
    try:
        settings = msgspec.convert(raw, Settings, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise SettingsError(_name_variable(str(exc))) from None
    check_settings(settings)
    return settings


def _name_variable(message: str) -> str:
    # msgspec says "... - at `$.port`"; operators set PORT, so name that.
    if "`$." in message:
        field = message.split("`$.", 1)[1].split("`", 1)[0].split("[", 1)[0]
        return f"{field.upper()}: {message.split(' - at ', 1)[0]}"
    return message


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a WEBHOOK_SECRET: the base64 part of ``whsec_<base64>`` (strictly decoded, so a
    mistyped secret is an error rather than another key), else the value's own bytes."""
    if not secret.startswith("whsec_"):
        return secret.encode()
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        key = b""
    if not key:
        raise SettingsError("WEBHOOK_SECRET: the part after whsec_ is not valid (non-empty) base64")
    return key


def check_settings(settings: Settings) -> None:
    """Stop start-up on a malformed WEBHOOK_SECRET and on what production cannot run without, naming the
    variable."""
    if settings.webhook_secret is not None:
        webhook_key(settings.webhook_secret.get())
    _check_job_timings(settings)
    if settings.storage_backend == "s3" and not settings.s3_bucket:
        raise SettingsError("S3_BUCKET: required with STORAGE_BACKEND=s3")
    if settings.environment != "production":
        return
    missing = [name.upper() for name in _REQUIRED_IN_PRODUCTION if not getattr(settings, name)]
    if settings.supabase_url is None and settings.supabase_jwt_secret is None:
        missing.append("SUPABASE_URL or SUPABASE_JWT_SECRET")
    if missing:
        raise SettingsError(f"missing required setting(s) for production: {', '.join(missing)}")


def _check_job_timings(settings: Settings) -> None:
    """A live job must survive a missed heartbeat, and a dead worker's redelivered message (Dramatiq, after
    BROKER_HEARTBEAT_TIMEOUT_MS) must find its job stale, or it is dropped and only the sweep recovers it."""
    heartbeat, stale = settings.worker_heartbeat_seconds, settings.stale_job_seconds
    if stale < 2 * heartbeat:
        raise SettingsError(
            f"STALE_JOB_SECONDS ({stale:g}) must be at least twice WORKER_HEARTBEAT_SECONDS ({heartbeat:g})"
        )
    if settings.broker_heartbeat_timeout_ms < (stale + 2) * 1000:
        raise SettingsError(
            f"BROKER_HEARTBEAT_TIMEOUT_MS ({settings.broker_heartbeat_timeout_ms}) must be at least "
            f"STALE_JOB_SECONDS + 2 s ({(stale + 2) * 1000:g})"
        )
