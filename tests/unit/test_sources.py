"""Checks of a job's source done before anything is fetched: the key's prefix, the URL's scheme and host,
public addresses only (the worker's resolver refuses private ones at connect time)."""

from __future__ import annotations

import pytest

from tests.support.config import make_settings
from xenios_ai.errors import Forbidden, InvalidInput
from xenios_ai.storage.sources import Source, _public, check_source, fetch_url

SETTINGS = make_settings(
    {
        "SOURCE_STORAGE_PREFIXES": "uploads/{owner}/,shared/",
        "SOURCE_URL_ALLOWED_HOSTS": "files.example.com,.cdn.example.net",
    }
)


@pytest.mark.parametrize(
    ("source", "error"),
    [
        (Source(storage_key="uploads/u1/a.pdf"), None),
        (Source(storage_key="shared/a.pdf"), None),
        (Source(storage_key="uploads/u2/a.pdf"), Forbidden),
        (Source(storage_key="jobs/1/upload"), Forbidden),
        (Source(storage_key="uploads/u1/../u2/a.pdf"), InvalidInput),
        (Source(url="https://files.example.com/a.pdf"), None),
        (Source(url="https://eu.cdn.example.net/a.pdf"), None),
        (Source(url="https://cdn.example.net.evil.org/a.pdf"), Forbidden),
        (Source(url="https://evil.org/?files.example.com"), Forbidden),
        (Source(url="http://files.example.com/a.pdf"), InvalidInput),  # https only
        (Source(url="https://user:pw@files.example.com/a.pdf"), InvalidInput),
    ],
)
def test_check_source(source: Source, error: type[Exception] | None) -> None:
    if error is None:
        assert check_source(source, SETTINGS, "u1") is source
    else:
        with pytest.raises(error):
            check_source(source, SETTINGS, "u1")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("fd00::1", False),
        ("2606:4700:4700::1111", True),
    ],
)
def test_only_public_addresses_are_fetched(address: str, public: bool) -> None:
    assert _public(address) is public


async def test_a_name_resolving_to_a_private_address_is_refused_at_connect_time() -> None:
    settings = make_settings({"SOURCE_URL_ALLOWED_HOSTS": "localhost"})
    with pytest.raises(Forbidden) as caught:
        async for _ in fetch_url("https://localhost/a.pdf", settings, 1000):
            pass
    assert caught.value.code == "source_forbidden"
