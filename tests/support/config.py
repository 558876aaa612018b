"""Settings for tests, built from an environment dict (never from the developer's .env)."""

from __future__ import annotations

from typing import Any

from xenios_ai.settings import Settings
from xenios_ai.settings_load import load_settings


def make_settings(env: dict[str, str], **overrides: Any) -> Settings:
    return load_settings(env, dotenv=False, **overrides)
