"""Command line: ``xenios-ai serve | worker | migrate | dev | token | logs``."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jwt
from granian.constants import Interfaces
from granian.server import Server
from loguru import logger

from xenios_ai import logs
from xenios_ai.api.timeouts import granian_http1
from xenios_ai.db.migrate import migrate
from xenios_ai.db.pool import database_url
from xenios_ai.embedded import start_postgres, start_redis
from xenios_ai.jobs.queues import QUEUES
from xenios_ai.jobs.supervisor import Supervisor, count_restart, worker_commands
from xenios_ai.log import setup_logging
from xenios_ai.observability.multiprocess import WORKER_METRICS_FORK, prepare_process_group
from xenios_ai.settings import Settings, SettingsError
from xenios_ai.settings_load import load_settings
from xenios_ai.transcription.model import WORKER_PROCESSES_ENV

DEV_API_KEY = "dev-api-key"
DEV_JWT_SECRET = "dev-jwt-secret-not-for-production-use"  # noqa: S105 - dev only, production refuses it


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    prepare_process_group(settings, "api")  # before Granian forks its workers
    server = Server(
        "xenios_ai.api.app:app_factory",
        factory=True,
        address=args.host or settings.host,
        port=args.port or settings.port,
        interface=Interfaces.ASGI,
        workers=args.workers or settings.api_workers,
        backlog=2048,
        log_access=False,
        reload=args.reload,
        reload_paths=[Path(__file__).parent] if args.reload else None,
        respawn_failed_workers=True,
        http1_settings=granian_http1(settings),
        workers_kill_timeout=30,
    )
    server.serve()
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    """Dramatiq workers under `jobs.supervisor` (a killed worker process is restarted, the others keep
    serving); with ``--watch`` (dev) Dramatiq's own reloader instead."""
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        logger.error("unknown queue(s) {}; known: {}", ", ".join(unknown), ", ".join(QUEUES))
        return 2
    prepare_process_group(settings, "worker")  # inherited by every worker process
    os.environ[WORKER_PROCESSES_ENV] = str(args.processes)  # WHISPER_THREADS=0 shares the cores among them
    port = args.metrics_port or settings.worker_metrics_port
    if port:
        os.environ["WORKER_METRICS_PORT"] = str(port)
    if args.watch:
        command = [
            sys.executable, "-m", "dramatiq", "xenios_ai.worker", "--queues", *queues,
            "--processes", str(args.processes), "--threads", str(args.threads),
            "--watch", str(Path(__file__).parent),
        ]  # fmt: skip
        if port:
            command += ["--fork-function", WORKER_METRICS_FORK]
        os.execv(sys.executable, command)  # noqa: S606 - the worker replaces this process
    commands = worker_commands(
        sys.executable, queues, args.processes, args.threads, WORKER_METRICS_FORK if port else None
    )
    return Supervisor(commands, on_restart=count_restart).run()


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    applied = migrate(database_url(settings))
    logger.info("migrations applied: {}", ", ".join(applied) if applied else "none (up to date)")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    """Mint an HS256 user token for local testing (needs SUPABASE_JWT_SECRET; refused in production)."""
    secret = settings.supabase_jwt_secret.get() if settings.supabase_jwt_secret else None
    if secret is None and settings.is_dev and settings.supabase_url is None:
        secret = DEV_JWT_SECRET  # what `xenios-ai dev` configures when nothing is set
    if settings.environment == "production" or secret is None:
        logger.error("token needs SUPABASE_JWT_SECRET and a non-production ENVIRONMENT")
        return 2
    now = int(time.time())
    claims = {"sub": args.sub, "aud": settings.supabase_jwt_audience, "role": "authenticated"}
    claims |= {"iat": now, "exp": now + args.ttl}
    if settings.supabase_url:
        claims["iss"] = settings.supabase_url.rstrip("/") + "/auth/v1"
    print(jwt.encode(claims, secret, algorithm="HS256"))
    return 0


def _dev_environment(settings: Settings) -> tuple[dict[str, str], list[object]]:
    """The children's environment: embedded PostgreSQL/Redis for what is unset, dev key and JWT secret."""
    data = Path(settings.data_dir)
    env = dict(os.environ)
    keep_alive: list[object] = []
    if settings.database_url is None:
        pg = start_postgres(data / "postgres")
        keep_alive.append(pg)
        env["DATABASE_URL"] = pg.url
        logger.info("embedded PostgreSQL: DATABASE_URL={}", pg.url)
    if settings.redis_url is None:
        rd = start_redis(data / "redis")
        keep_alive.append(rd)
        env["REDIS_URL"] = rd.url
        logger.info("embedded Redis: REDIS_URL={}", rd.url)
    if settings.xenios_backend_api_key is None:
        env["XENIOS_BACKEND_API_KEY"] = DEV_API_KEY
        logger.info("dev X-API-Key: {}", DEV_API_KEY)
    if settings.supabase_url is None and settings.supabase_jwt_secret is None:
        env["SUPABASE_JWT_SECRET"] = DEV_JWT_SECRET
        logger.info("dev JWTs: uv run xenios-ai token --sub <user-id> (HS256 with the dev secret)")
    env.setdefault("STORAGE_DIR", str((data / "storage").resolve()))
    return env, keep_alive


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    """API with hot reload and a worker for every queue; embedded PostgreSQL/Redis when none is set."""
    if settings.environment == "production":
        logger.error("dev refuses to run with ENVIRONMENT=production")
        return 2
    env, _servers = _dev_environment(settings)
    database = env.get("DATABASE_URL") or (settings.database_url.get() if settings.database_url else "")
    applied = migrate(database)
    logger.info("migrations applied: {}", ", ".join(applied) or "none (up to date)")
    port = args.port or settings.port
    logger.info("API on http://{}:{}  (OpenAPI: /schema)", settings.host, port)
    me = [sys.executable, "-m", "xenios_ai"]
    children = [subprocess.Popen([*me, "serve", "--reload", "--port", str(port)], env=env)]
    if not args.no_worker:
        children.append(
            subprocess.Popen([*me, "worker", "--processes", "1", "--threads", "4", "--watch"], env=env)
        )
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xenios-ai", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API on Granian")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    serve.set_defaults(run=_serve)
    worker = sub.add_parser("worker", help="run Dramatiq workers for some queues")
    worker.add_argument("--queues", default="default,extraction,transcription,llm")
    worker.add_argument("--processes", type=int, default=1)
    worker.add_argument("--threads", type=int, default=4)
    worker.add_argument("--watch", action="store_true", help="restart on code changes (dev)")
    worker.add_argument("--metrics-port", type=int, help="serve the workers' metrics (WORKER_METRICS_PORT)")
    worker.set_defaults(run=_worker)
    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(run=_migrate)
    dev = sub.add_parser("dev", help="API + worker with hot reload; embedded services when unset")
    dev.add_argument("--port", type=int)
    dev.add_argument("--no-worker", action="store_true")
    dev.set_defaults(run=_dev)
    token = sub.add_parser("token", help="mint a dev HS256 user JWT")
    token.add_argument("--sub", required=True)
    token.add_argument("--ttl", type=int, default=3600)
    token.set_defaults(run=_token)
    logs.add_arguments(sub.add_parser("logs", help="show the JSON log stream readable, filtered"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "logs":  # needs no settings: it reads a stream
        return logs.run(args)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"xenios-ai: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings, component=args.command)
    code: int = args.run(settings, args)
    return code


if __name__ == "__main__":
    sys.exit(main())
