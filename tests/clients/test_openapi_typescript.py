"""The OpenAPI document drives a typed client (issue 20): `openapi-typescript` generates TypeScript types
from /schema/openapi.json and `tsc` compiles a small client of the MVP's (tests/clients/openapi-ts/client.ts)
against them, including ``@ts-expect-error`` lines that must stay errors (an unknown task).

tests/clients/openapi-ts holds package.json + package-lock.json (`npm ci --prefix tests/clients/openapi-ts`
installs them; .ci/run does). The document is read from the app in-process: no server is needed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from tests.support.config import make_settings
from tests.support.node import ensure_node_modules
from xenios_ai.api.app import create_app

TS_DIR = Path(__file__).parent / "openapi-ts"


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=TS_DIR, capture_output=True, text=True, timeout=180, check=False)


def test_typescript_types_from_the_openapi_document_compile_a_client(test_env: dict[str, str]) -> None:
    assert shutil.which("node") is not None, "Node 20+ is needed (openapi-typescript and tsc)"
    ensure_node_modules(TS_DIR)
    schema: dict[str, Any] = (
        TestClient(create_app(make_settings(test_env))).get("/schema/openapi.json").json()
    )
    generated = TS_DIR / "generated"
    generated.mkdir(exist_ok=True)
    (generated / "openapi.json").write_text(json.dumps(schema))

    made = _run("node", "generate.mjs", "generated/openapi.json", "generated/api.d.ts")
    assert made.returncode == 0, made.stderr + made.stdout
    compiled = _run("node", "node_modules/typescript/bin/tsc", "-p", "tsconfig.json")
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr

    # The compile is not vacuous: a client reading a field the API does not have fails.
    (generated / "broken.ts").write_text(
        'import type { paths } from "./api";\n'
        'type Job = paths["/api/v1/jobs/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"];\n'
        "export const wrong = (job: Job): string => job.no_such_field;\n"
    )
    broken = _run("node", "node_modules/typescript/bin/tsc", "--noEmit", "--strict", "generated/broken.ts")
    assert broken.returncode != 0
    assert "no_such_field" in broken.stdout
