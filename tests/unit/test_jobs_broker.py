"""The jobs' Dramatiq broker as `make_broker` builds it."""

from __future__ import annotations

import redis

from xenios_ai.jobs.broker import make_broker
from xenios_ai.settings_load import load_settings


def test_the_broker_connections_carry_the_intended_timeouts() -> None:
    # Given a URL, Dramatiq builds the pool from the URL alone and redis-py drops connection arguments
    # passed next to it: a dead Redis then blocked a worker for redis-py's defaults, not these.
    settings = load_settings({"REDIS_URL": "redis://127.0.0.1:6379/3", "REDIS_NAMESPACE": "t"}, dotenv=False)
    broker = make_broker(settings, [])
    pool = broker.client.connection_pool
    assert pool.connection_kwargs["socket_connect_timeout"] == 2.0
    assert pool.connection_kwargs["socket_timeout"] == 10.0
    assert (pool.connection_kwargs["host"], pool.connection_kwargs["port"], pool.connection_kwargs["db"]) == (
        "127.0.0.1",
        6379,
        3,
    )
    connection = pool.make_connection()
    assert isinstance(connection, redis.Connection)
    assert (connection.socket_connect_timeout, connection.socket_timeout) == (2.0, 10.0)
    assert broker.namespace == "t:dramatiq"
