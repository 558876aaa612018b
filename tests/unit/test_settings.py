"""Settings: environment parsing, secrets that never print, production refusing to start without them."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tests.support.env_example import render, setting_docs
from xenios_ai.settings import Secret, Settings, SettingsError
from xenios_ai.settings_load import load_settings

PRODUCTION = {
    "ENVIRONMENT": "production",
    "XENIOS_BACKEND_API_KEY": "k1",
    "DATABASE_URL": "postgresql://db/x",
    "REDIS_URL": "redis://r:6379/0",
    "OPENROUTER_API_KEY": "or-key",
    "SUPABASE_URL": "https://project.supabase.co",
}


def test_defaults_are_a_runnable_dev_configuration() -> None:
    settings = load_settings({}, dotenv=False)
    assert settings.environment == "dev"
    assert settings.api_keys == ()
    assert settings.log_json is False
    assert settings.openrouter_base_url == "https://openrouter.ai/api/v1"


def test_values_are_parsed_from_strings() -> None:
    settings = load_settings(
        {"PORT": "9001", "LLM_MODELS": '{"chat": "a/b,c/d"}', "WEBHOOK_ALLOW_PRIVATE": "true"}, dotenv=False
    )
    assert settings.port == 9001
    assert settings.llm_models == {"chat": "a/b,c/d"}
    assert settings.webhook_allow_private is True


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^PORT: "):
        load_settings({"PORT": "eighty"}, dotenv=False)


def test_a_secret_that_is_not_a_string_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^XENIOS_BACKEND_API_KEY: .*expected a string for Secret"):
        load_settings({}, dotenv=False, xenios_backend_api_key=12345)


def test_api_key_list_allows_rotation() -> None:
    settings = load_settings({"XENIOS_BACKEND_API_KEY": " old-key , new-key ,"}, dotenv=False)
    assert settings.api_keys == ("old-key", "new-key")


def test_secrets_never_print() -> None:
    settings = load_settings(PRODUCTION, dotenv=False)
    text = repr(settings) + str(settings)
    for secret in ("k1", "or-key", "postgresql://db/x", "redis://r:6379/0"):
        assert secret not in text
    assert isinstance(settings.database_url, Secret)
    assert settings.database_url.get() == "postgresql://db/x"
    assert settings.log_json is True


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("XENIOS_BACKEND_API_KEY", "XENIOS_BACKEND_API_KEY"),
        ("DATABASE_URL", "DATABASE_URL"),
        ("REDIS_URL", "REDIS_URL"),
        ("OPENROUTER_API_KEY", "OPENROUTER_API_KEY"),
        ("SUPABASE_URL", "SUPABASE_URL or SUPABASE_JWT_SECRET"),
    ],
)
def test_production_refuses_to_start_without_a_secret(missing: str, named: str) -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    with pytest.raises(SettingsError, match=named):
        load_settings(env, dotenv=False)


def test_production_accepts_the_legacy_jwt_secret_instead_of_jwks() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "SUPABASE_URL"} | {"SUPABASE_JWT_SECRET": "s"}
    assert load_settings(env, dotenv=False).supabase_jwt_secret == Secret("s")


def test_every_setting_has_a_docstring_and_env_example_is_current() -> None:

    docs, _ = setting_docs()
    undocumented = [f.name for f in msgspec.structs.fields(Settings) if f.name not in docs]
    assert undocumented == []
    current = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    assert current == render(), "regenerate: uv run python -m tests.support.env_example > .env.example"


def test_s3_storage_needs_a_bucket_and_keeps_its_secret_masked() -> None:
    with pytest.raises(SettingsError, match="S3_BUCKET"):
        load_settings({"STORAGE_BACKEND": "s3"}, dotenv=False)
    settings = load_settings(
        {
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": "b",
            "S3_SECRET_ACCESS_KEY": "s3-secret-value",
            "S3_FORCE_PATH_STYLE": "true",
            "SOURCE_URL_ALLOWED_HOSTS": "files.example.com, .cdn.example.com",
        },
        dotenv=False,
    )
    assert settings.s3_force_path_style is True
    assert isinstance(settings.s3_secret_access_key, Secret)
    assert "s3-secret-value" not in repr(settings)
    assert settings.source_hosts == ("files.example.com", ".cdn.example.com")
    with pytest.raises(SettingsError, match="STORAGE_BACKEND"):
        load_settings({"STORAGE_BACKEND": "ftp"}, dotenv=False)
