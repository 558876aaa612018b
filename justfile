# Xenios AI backend: developer targets. `uv run just --list` shows them all (ops targets: infra/ops.just).

set dotenv-load := false

import 'infra/ops.just'

# Run the API and a worker for every queue with hot reload (embedded PostgreSQL/Redis when unset)
dev *ARGS:
    uv run xenios-ai dev {{ ARGS }}

# Run the test suite (real PostgreSQL, Redis, workers, Docling, faster-whisper) in two processes,
# a test file per process at a time (`just test -n 0 ...` runs in this one)
test *ARGS:
    uv run pytest -n 2 --dist loadfile {{ ARGS }}

# The fast loop: unit tests only, none that builds an engine (marked `engine`); ~25 s of CPU here
test-fast *ARGS:
    uv run pytest -n 2 -m "not engine" tests/unit {{ ARGS }}

# Run the tests with coverage of src/
test-cov *ARGS:
    uv run pytest -n 2 --dist loadfile --cov=xenios_ai --cov-report=term-missing --cov-report=html {{ ARGS }}

# Lint: ruff, the import contracts (import-linter, pyproject's [tool.importlinter]) and the declared
# dependencies (deptry)
lint:
    uv run ruff check src tests
    uv run lint-imports --no-cache
    uv run deptry src

# Format the code (`just format --check` only checks)
format *ARGS:
    uv run ruff format {{ ARGS }} src tests

# Type-check: mypy --strict on src and tests
typecheck:
    uv run mypy src tests

# Everything CI checks: lint, format check, types, tests
verify: lint (format "--check") typecheck test

# Benchmarks (not part of `just test`): results as tables and JSON under bench-results/
bench *ARGS:
    uv run python -m tests.benchmarks {{ ARGS }}

# Apply database migrations
migrate:
    uv run xenios-ai migrate
