"""Backing stores: the PostgreSQL pool, migrations, and the Redis client."""
