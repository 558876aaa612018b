"""The OpenAPI document is complete enough to generate a client (issue 20), and Swagger UI needs nothing
from the network. (The generated TypeScript client: tests/clients/test_openapi_typescript.py.)"""

from __future__ import annotations

import re
from typing import Any

from litestar.testing import AsyncTestClient

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


async def _schema(client: AsyncTestClient[Any]) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


async def test_every_error_is_a_documented_problem(client: AsyncTestClient[Any]) -> None:
    schema = await _schema(client)
    assert schema["components"]["schemas"]["Problem"]["required"] == [
        "type",
        "title",
        "status",
        "detail",
        "code",
    ]
    for path, operations in schema["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for method, operation in operations.items():
            errors = {s: r for s, r in operation["responses"].items() if int(s) >= 400}
            assert "400" not in errors, (path, method)  # Litestar's {status_code, detail, extra}: never sent
            assert {"422", "500", "503"} & set(errors), (path, method)
            for status, response in errors.items():
                assert response["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}, (
                    path,
                    status,
                )
    job = schema["paths"]["/api/v1/jobs/{job_id}"]
    assert {"401", "403", "404", "422"} <= set(job["get"]["responses"])
    assert "409" in schema["paths"]["/api/v1/jobs/{job_id}/cancel"]["post"]["responses"]
    assert "409" in job["delete"]["responses"]
    assert job["delete"]["deprecated"] is True  # DELETE still cancels, for one release
    assert {"413", "415", "429"} <= set(schema["paths"]["/api/v1/jobs/transcription"]["post"]["responses"])
    assert {"502", "503", "504"} <= set(schema["paths"]["/api/v1/llm/stream"]["post"]["responses"])

    # The problem a route answers has that shape.
    answered = await client.get("/api/v1/jobs", headers={"X-API-Key": "wrong"})
    assert answered.status_code == 401
    assert answered.headers["content-type"].startswith("application/problem+json")
    assert set(schema["components"]["schemas"]["Problem"]["required"]) <= set(answered.json())


async def test_uploads_streams_and_enums_are_described(client: AsyncTestClient[Any]) -> None:
    schema = await _schema(client)
    components = schema["components"]["schemas"]
    for kind in ("transcription", "extraction"):
        body = schema["paths"][f"/api/v1/jobs/{kind}"]["post"]["requestBody"]["content"][
            "multipart/form-data"
        ]
        fields = body["schema"]["properties"]
        assert fields["file"] == {"type": "string", "format": "binary", "description": "The file to process."}
        assert fields["options"]["$ref"].split("/")[-1] in components
        assert {"webhook_url", "webhook_include_result"} <= set(fields)
        assert body["encoding"]["options"]["contentType"] == "application/json"
    for path, events in (
        ("/api/v1/jobs/{job_id}/events", {"state", "progress"}),
        ("/api/v1/llm/stream", {"start", "delta", "done", "error"}),
    ):
        method = "get" if "events" in path else "post"
        content = schema["paths"][path][method]["responses"]["200"]["content"]
        assert list(content) == ["text/event-stream"]
        assert set(content["text/event-stream"]["x-events"]) == events
        for ref in content["text/event-stream"]["x-events"].values():
            assert ref["$ref"].split("/")[-1] in components
    assert "chat" in components["CompleteRequest"]["properties"]["task"]["enum"]
    rules = components["AnalysisRequest"]["oneOf"]
    assert [rule["required"] for rule in rules] == [["text"], ["source_job_id"]]


async def test_swagger_ui_loads_only_local_assets(client: AsyncTestClient[Any]) -> None:
    page = await client.get("/schema")
    assert page.status_code == 200
    assert "SwaggerUIBundle" in page.text
    assert not re.findall(r"https?://", page.text)  # nothing from a CDN: it works offline
    assets = re.findall(r"(?:src|href)=['\"](/[^'\"]+)", page.text)
    assert len(assets) >= 3
    for asset in assets:
        response = await client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 0
    assert (await client.get("/schema/assets/../../pyproject.toml")).status_code == 404
    assert (await client.get("/schema/assets/unknown.js")).status_code == 404
