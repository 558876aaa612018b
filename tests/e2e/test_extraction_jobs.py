"""Extraction jobs end to end: uploads over HTTP (Granian), a real worker process running Docling,
PostgreSQL, Redis, and the fake OpenRouter for the ``then`` analyses.

The fixtures and the sentences, headings and cells they hold come from ``tests/data/make_documents.py``.
"""

from __future__ import annotations

import io
import json
import random
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.data import make_documents as docs
from tests.fakes.openrouter import FakeOpenRouter
from tests.support import tokens
from tests.support.jobs import accepted_id, job_events, upload, wait_for_job
from tests.support.processes import ApiServer, WorkerProcess
from tests.support.sse import sse_events

DOCUMENTS = docs.DOCUMENTS


def submit(
    base_url: str,
    document: str | Path | bytes,
    options: dict[str, Any] | None = None,
    *,
    filename: str | None = None,
    sub: str = "user-1",
) -> httpx.Response:
    """POST the document (a fixture's name, a path, or bytes) to /api/v1/jobs/extraction."""
    if isinstance(document, bytes):
        data, name = document, filename or "upload.bin"
    else:
        path = document if isinstance(document, Path) else DOCUMENTS / document
        data, name = path.read_bytes(), filename or path.name
    return upload(base_url, "extraction", name, data, options, sub=sub)


def submitted(base_url: str, document: str | Path | bytes, options: dict[str, Any] | None = None) -> str:
    return accepted_id(submit(base_url, document, options))


def run(base_url: str, document: str | Path | bytes, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Submit and wait for the job's terminal state (the first job also waits for Docling to load)."""
    return wait_for_job(base_url, submitted(base_url, document, options), timeout=60)


def succeeded(base_url: str, document: str | Path | bytes, options: dict[str, Any] | None = None) -> Any:
    job = run(base_url, document, options)
    assert job["status"] == "succeeded", job
    assert job["error"] is None
    assert (job["progress"], job["progress_message"]) == (1.0, "done")
    return job["result"]


def failed_with(
    base_url: str, document: str | Path | bytes, code: str, options: Any = None
) -> dict[str, Any]:
    job = run(base_url, document, options)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == code, job
    assert job["error"]["message"]
    assert (job["attempts"], job["result"]) == (1, None)  # bad input is never retried
    return job


def flat(text: str) -> str:
    """Whitespace-normalized text: the native PDF pipeline emits one paragraph per printed line."""
    return " ".join(text.split())


def cells(table: dict[str, Any]) -> list[list[str]]:
    """A Docling JSON table as rows of cell texts."""
    data = table["data"]
    rows = [["" for _ in range(data["num_cols"])] for _ in range(data["num_rows"])]
    for cell in data["table_cells"]:
        rows[cell["start_row_offset_idx"]][cell["start_col_offset_idx"]] = cell["text"]
    return rows


def chunk_with(result: dict[str, Any], text: str) -> dict[str, Any]:
    [chunk] = [chunk for chunk in result["chunks"] if text in chunk["text"]]
    return dict(chunk)


def worker_id_of(database_url: str, job_id: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT worker_id FROM ai_backend.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


def pptx_posing_as_docx() -> bytes:
    """slides.pptx with a padded first member: the first 8 KiB show an OOXML package and nothing else, so
    the name (.docx) decides at submit; the worker reads the whole package and finds a presentation."""
    source = zipfile.ZipFile(DOCUMENTS / "slides.pptx")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "[Content_Types].xml":
                data = data.replace(b"?>", b"?><!--" + b" " * 9000 + b"-->", 1)
                target.writestr(info.filename, data, compress_type=zipfile.ZIP_STORED)
            else:
                target.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


# --- every format through the API and the shared worker -----------------------------------------------


def test_pdf_text_pages_and_per_page_status(api_server_url: str, job_worker: WorkerProcess) -> None:
    result = succeeded(api_server_url, "multipage.pdf", {"output_formats": ["markdown", "text", "json"]})

    assert (result["format"], result["status"], result["pipeline"]) == ("pdf", "success", "native")
    assert result["page_count"] == 4
    assert result["pages"] == [{"page": n, "status": "ok", "error": None} for n in range(1, 5)]
    assert result["failed_pages"] == []
    for sentences in docs.PDF_PAGE_SENTENCES.values():
        for sentence in sentences:
            assert sentence in flat(result["markdown"])
    text = flat(result["text"])
    assert text.index(docs.PDF_LEFT_COLUMN) < text.index(docs.PDF_RIGHT_COLUMN)  # column by column
    assert sorted(result["document"]["pages"]) == ["1", "2", "3", "4"]
    assert result["document_file"] is None
    for page, marker in docs.PDF_PAGE_MARKERS.items():
        assert page in chunk_with(result, marker)["pages"]


def test_docx_headings_list_and_table(api_server_url: str) -> None:
    result = succeeded(api_server_url, "report.docx")

    assert (result["format"], result["page_count"], result["pages"]) == ("docx", 0, [])
    markdown = result["markdown"]
    assert f"## {docs.DOCX_TITLE}" in markdown
    assert f"### {docs.DOCX_GOALS_HEADING}" in markdown
    assert docs.DOCX_INTRO in markdown
    assert all(f"- {bullet}" in markdown for bullet in docs.DOCX_BULLETS)
    [table] = result["document"]["tables"]
    assert cells(table) == docs.DOCX_TABLE
    assert chunk_with(result, docs.DOCX_BULLETS[0])["headings"] == [docs.DOCX_TITLE, docs.DOCX_GOALS_HEADING]
    assert chunk_with(result, "Intervals")["headings"] == [docs.DOCX_TITLE, docs.DOCX_SCHEDULE_HEADING]


def test_pptx_slides_are_pages(api_server_url: str) -> None:
    result = succeeded(api_server_url, "slides.pptx")

    assert (result["format"], result["page_count"]) == ("pptx", 2)
    assert [page["status"] for page in result["pages"]] == ["ok", "ok"]
    for slide, (title, bullets) in enumerate(docs.PPTX_SLIDES, start=1):
        assert f"# {title}" in result["markdown"]
        assert all(bullet in result["markdown"] for bullet in bullets)
        chunk = chunk_with(result, bullets[0])
        assert (chunk["headings"], chunk["pages"]) == ([title], [slide])


def test_xlsx_two_sheets_become_two_tables(api_server_url: str) -> None:
    result = succeeded(api_server_url, "workbook.xlsx")

    assert (result["format"], result["page_count"]) == ("xlsx", 2)
    tables = [cells(table) for table in result["document"]["tables"]]
    assert tables == [[[str(value) for value in row] for row in rows] for rows in docs.XLSX_SHEETS.values()]
    assert "| Maria Lopez | Marathon" in result["markdown"]


def test_html_heading_paragraph_and_table(api_server_url: str) -> None:
    result = succeeded(api_server_url, "page.html")

    assert result["format"] == "html"
    assert f"# {docs.HTML_HEADING}" in result["markdown"]
    assert docs.HTML_PARAGRAPH in result["markdown"]
    [table] = result["document"]["tables"]
    assert cells(table) == docs.HTML_TABLE
    assert chunk_with(result, docs.HTML_PARAGRAPH)["headings"] == [docs.HTML_HEADING]


def test_markdown_headings_list_and_table(api_server_url: str) -> None:
    result = succeeded(api_server_url, "notes.md", {"output_formats": ["markdown", "json"]})

    assert result["format"] == "markdown"
    assert f"# {docs.MD_HEADING}" in result["markdown"]
    assert all(f"- {item}" in result["markdown"] for item in docs.MD_ITEMS)
    assert chunk_with(result, docs.MD_ITEMS[0])["headings"] == [docs.MD_HEADING, docs.MD_SUBHEADING]
    [table] = result["document"]["tables"]
    assert cells(table) == [["Metric", "Value"], ["Sleep", "7.5 h"]]


def test_csv_rows_become_a_table(api_server_url: str) -> None:
    result = succeeded(api_server_url, "sessions.csv")

    assert result["format"] == "csv"
    [table] = result["document"]["tables"]
    assert cells(table) == docs.CSV_ROWS


def test_options_shape_the_result(api_server_url: str) -> None:
    result = succeeded(
        api_server_url,
        "multipage.pdf",
        {"output_formats": ["text"], "chunking": False, "page_range": [2, 3]},
    )
    assert (result["markdown"], result["document"], result["chunks"]) == (None, None, [])
    assert [page["page"] for page in result["pages"]] == [2, 3]
    text = flat(result["text"])
    assert docs.PDF_COLUMNS_HEADING in text
    assert docs.PDF_PAGE_MARKERS[3] in text
    assert docs.PDF_PAGE_MARKERS[1] not in text

    small = succeeded(api_server_url, "report.docx", {"output_formats": ["markdown"], "chunk_max_tokens": 16})
    default = succeeded(api_server_url, "report.docx", {"output_formats": ["markdown"]})
    assert len(small["chunks"]) > len(default["chunks"])


def test_a_long_pdf_reports_progress_per_page_and_keeps_its_document_in_blob_storage(
    api_server_url: str, tmp_path: Path
) -> None:
    pdf = tmp_path / "long.pdf"
    docs.write_long_pdf(pdf, 60)
    job_id = submitted(api_server_url, pdf)
    events = job_events(api_server_url, job_id)

    final = events[-1]
    assert (final[0], final[1]["status"]) == ("state", "succeeded"), final
    pages = [data for name, data in events if name == "progress" and data["message"].startswith("page ")]
    assert len(pages) >= 3, events  # written at most every JOB_PROGRESS_INTERVAL_SECONDS
    assert all(data["message"].endswith("/60") for data in pages)
    fractions = [data["progress"] for data in pages]
    assert fractions == sorted(fractions)
    assert 0 < fractions[0] < fractions[-1] < 1

    result = final[1]["result"]
    assert (result["page_count"], result["failed_pages"], result["document"]) == (60, [], None)
    reference = result["document_file"]
    assert reference["url"] == f"/api/v1/jobs/{job_id}/result/document.json"
    response = httpx.get(f"{api_server_url}{reference['url']}", headers=tokens.headers(), timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert len(response.content) == reference["size"]
    document = response.json()
    assert sorted(int(page) for page in document["pages"]) == list(range(1, 61))
    assert "Section 60" in {item["text"] for item in document["texts"]}

    # Only the owner sees it; the upload is not a result part.
    other = httpx.get(f"{api_server_url}{reference['url']}", headers=tokens.headers("user-2"), timeout=10)
    assert other.status_code == 404
    upload = httpx.get(
        f"{api_server_url}/api/v1/jobs/{job_id}/result/upload", headers=tokens.headers(), timeout=10
    )
    assert (upload.status_code, upload.json()["code"]) == (404, "result_part_not_found")


# --- submit: the type from the bytes, options ------------------------------------------------------------


def test_submit_tells_the_type_from_the_bytes(api_server_url: str) -> None:
    for name in ("image_renamed.pdf", "noise.pdf"):
        data = (DOCUMENTS / name).read_bytes() if name != "noise.pdf" else random.Random(5).randbytes(20_000)
        response = submit(api_server_url, data, filename=name)
        assert response.status_code == 415, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "unsupported_format"
        assert "PDF, DOCX" in response.json()["detail"]

    response = submit(api_server_url, (DOCUMENTS / "report.docx").read_bytes(), filename="upload.bin")
    assert response.status_code == 202
    job = httpx.get(f"{api_server_url}{response.headers['location']}", headers=tokens.headers()).json()
    assert (job["kind"], job["upload"]["format"], job["upload"]["filename"]) == (
        "extraction",
        "docx",
        "upload.bin",
    )

    # Markdown that mentions the PDF header is Markdown, not a PDF.
    about_pdf = b"# PDF notes\n\nEvery PDF file starts with %PDF-1.7 and ends with %%EOF.\n"
    result = succeeded(api_server_url, about_pdf)
    assert result["format"] == "markdown"
    assert "Every PDF file starts with %PDF-1.7" in result["markdown"]


def test_a_package_whose_content_types_come_last_is_accepted(api_server_url: str) -> None:
    """Some writers store [Content_Types].xml last: its parts (word/...) tell the kind at submit."""
    response = submit(api_server_url, docs.package_with_content_types_last(DOCUMENTS / "report.docx"))
    assert response.status_code == 202, response.text
    job = wait_for_job(api_server_url, response.json()["job_id"], timeout=60)
    assert (job["status"], job["upload"]["format"]) == ("succeeded", "docx"), job
    assert f"## {docs.DOCX_TITLE}" in job["result"]["markdown"]


@pytest.mark.parametrize(
    "options",
    [
        {"page_range": [3, 1]},
        {"output_formats": ["pdf"]},
        {"ocr": True},
        {"then": ["world_domination"]},
        {"then": ["session_summary"], "output_formats": ["json"]},
        {"chunk_max_tokens": 4},
    ],
)
def test_invalid_options_are_refused_at_submit(api_server_url: str, options: dict[str, Any]) -> None:
    response = submit(api_server_url, "notes.md", options)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_options"


# --- failures: each with its code, and the worker goes on ---------------------------------------------


def test_every_failure_has_its_code_and_the_worker_takes_the_next_job(
    api_server_url: str, job_worker: WorkerProcess, test_env: dict[str, str], worker_log: Path
) -> None:
    garbage = b"%PDF-1.7\n" + random.Random(3).randbytes(20_000)
    cases: list[tuple[str | bytes, dict[str, Any] | None, str]] = [
        ("encrypted.pdf", None, "password_required"),
        ("encrypted.pdf", {"password": "not-the-password"}, "password_invalid"),
        (garbage, None, "unreadable_document"),
        ("multipage.pdf", {"page_range": [5, 6]}, "invalid_page_range"),
        (pptx_posing_as_docx(), None, "unsupported_format"),
        # 80 MiB of zeros in 80 KB: python-pptx would read it all into memory.
        (docs.package_with_zeros(DOCUMENTS / "slides.pptx", "ppt/media/zeros.bin", 80 * 2**20), None,
         "document_too_large"),
    ]  # fmt: skip
    for document, options, code in cases:
        if isinstance(document, bytes) and code == "unsupported_format":
            response = submit(api_server_url, document, options, filename="deck.docx")
            assert response.status_code == 202, response.text  # the first bytes could not tell
            job = wait_for_job(api_server_url, response.json()["job_id"], timeout=60)
            assert (job["status"], job["error"]["code"]) == ("failed", code), job
        else:
            job = failed_with(api_server_url, document, code, options)
        # The same worker process takes the next job.
        after = run(api_server_url, "sessions.csv")
        assert after["status"] == "succeeded", after
        database = test_env["DATABASE_URL"]
        assert worker_id_of(database, after["id"]) == worker_id_of(database, job["id"])
    assert job_worker.process is not None
    assert job_worker.process.poll() is None
    # One converter for the process, built once, whatever happened to the documents.
    built = [line for line in worker_log.read_text().splitlines() if "document extractor ready" in line]
    assert len(built) == 1, built


def test_a_truncated_pdf_succeeds_with_its_missing_pages_listed(api_server_url: str) -> None:
    result = succeeded(api_server_url, "truncated.pdf", {"output_formats": ["text"]})

    assert result["status"] == "partial_success"
    assert (result["page_count"], result["failed_pages"]) == (4, [3, 4])
    assert [page["status"] for page in result["pages"]] == ["ok", "ok", "failed", "failed"]
    assert result["pages"][2]["error"]
    assert "damaged" in result["warnings"][0]
    text = flat(result["text"])
    assert docs.PDF_PAGE_MARKERS[2] in text
    assert docs.PDF_PAGE_MARKERS[3] not in text


def test_the_password_opens_the_pdf_and_is_stored_nowhere(
    api_server_url: str, test_env: dict[str, str], api_log: Path, worker_log: Path
) -> None:
    options = {"password": docs.PDF_PASSWORD, "output_formats": ["text"]}
    key = {"Idempotency-Key": f"encrypted-{uuid.uuid4()}"}
    form = {"options": json.dumps(options)}
    file = {"file": ("report.pdf", (DOCUMENTS / "encrypted.pdf").read_bytes())}
    url = f"{api_server_url}/api/v1/jobs/extraction"
    first = httpx.post(url, files=file, data=form, headers=tokens.headers() | key, timeout=30)
    assert first.status_code == 202, first.text
    job = wait_for_job(api_server_url, first.json()["job_id"], timeout=60)
    assert job["status"] == "succeeded", job
    assert docs.PDF_PAGE_SENTENCES[1][0] in flat(job["result"]["text"])
    again = httpx.post(url, files=file, data=form, headers=tokens.headers() | key, timeout=30)
    assert (again.status_code, again.json()["job_id"]) == (202, job["id"])
    assert again.headers["idempotent-replayed"] == "true"

    with psycopg.connect(test_env["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT input::text, result::text, blobs FROM ai_backend.jobs WHERE id = %s", (job["id"],)
        ).fetchone()
    assert row is not None
    stored_input, stored_result, blobs = row
    assert docs.PDF_PASSWORD not in stored_input + stored_result
    assert json.loads(stored_input)["password"] is None
    # It was kept next to the upload for the worker, and deleted once the job had its outcome.
    secret = f"jobs/{job['id']}/secret"
    assert secret in blobs
    assert not (Path(test_env["STORAGE_DIR"]) / secret).exists()
    assert (Path(test_env["STORAGE_DIR"]) / f"jobs/{job['id']}/upload").exists()
    assert not list(Path(test_env["STORAGE_DIR"]).glob("jobs/*/secret"))  # the replay's was dropped at once
    assert job["id"] in worker_log.read_text()
    for log in (api_log, worker_log):
        assert docs.PDF_PASSWORD not in log.read_text()
        assert "not-the-password" not in log.read_text()


def test_a_running_extraction_can_be_cancelled(api_server_url: str, tmp_path: Path) -> None:
    pdf = tmp_path / "long.pdf"
    docs.write_long_pdf(pdf, 150)
    job_id = submitted(api_server_url, pdf)
    with httpx.stream(
        "GET", f"{api_server_url}/api/v1/jobs/{job_id}/events", headers=tokens.headers(), timeout=60
    ) as response:
        for name, data in sse_events(response):
            if name == "progress" and data["message"].startswith("page "):
                cancelled = httpx.delete(f"{api_server_url}/api/v1/jobs/{job_id}", headers=tokens.headers())
                assert cancelled.status_code == 200
                break
    job = wait_for_job(api_server_url, job_id, timeout=10)
    assert job["status"] == "cancelled"
    assert job["progress"] < 0.9
    assert run(api_server_url, "sessions.csv")["status"] == "succeeded"


# --- then: analyses of the extracted text -------------------------------------------------------------


def test_then_runs_an_analysis_on_the_markdown_linked_both_ways(
    api_server_url: str, fake_openrouter: FakeOpenRouter
) -> None:
    job_id = submitted(api_server_url, "notes.md", {"then": ["session_summary"]})
    final = job_events(api_server_url, job_id)[-1]
    assert final[1]["status"] == "succeeded", final
    [follow_up] = final[1]["result"]["follow_ups"]  # in the terminal event's result
    assert follow_up["task"] == "session_summary"
    assert "skipped" not in follow_up

    analysis = wait_for_job(api_server_url, follow_up["job_id"], timeout=30)
    assert analysis["status"] == "succeeded", analysis
    assert (analysis["kind"], analysis["source_job_id"]) == ("analysis", job_id)
    assert analysis["result"]["source_job_id"] == job_id
    assert analysis["result"]["content"]
    sent = [json.dumps(request.body) for request in fake_openrouter.requests]
    assert any(docs.MD_PARAGRAPH in body and docs.MD_ITEMS[0] in body for body in sent)

    # A document without text has nothing to analyse: no job, and the result says why.
    empty = succeeded(api_server_url, b"<html><body><p> </p></body></html>", {"then": ["session_summary"]})
    assert empty["follow_ups"] == [
        {"task": "session_summary", "job_id": None, "skipped": "the document has no text: nothing to analyse"}
    ]


# --- limits, with their own API and worker ---------------------------------------------------------------


class Stack:
    """An API and an extraction worker on their own database, Redis namespace and storage."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.logs = logs
        self.api = ApiServer(env, log_path=logs / "api.log")
        self.worker = WorkerProcess(env, queues="extraction,llm", threads=2, log_path=logs / "worker.log")

    @property
    def url(self) -> str:
        return self.api.url

    def worker_log(self) -> str:
        return (self.logs / "worker.log").read_text()


@pytest.fixture(scope="module", autouse=True)
def stacks(
    fresh_env: Callable[..., dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Stack]]:
    """Started first (their workers load Docling while the other tests run): ``limited``, with its own
    limits (1 MB uploads, 3 pages, 1.5 s per document, Docling documents over 2 kB in storage, 150,000
    cells). Jobs wait in the queue until the workers are up. (Layout mode without its models:
    tests/e2e/test_extraction_layout_mode.py.)"""
    envs = {
        "limited": fresh_env(
            EXTRACTION_MAX_UPLOAD_BYTES="1000000",
            EXTRACTION_MAX_PAGES="3",
            EXTRACTION_TIMEOUT_SECONDS="1.5",
            EXTRACTION_INLINE_DOCUMENT_BYTES="2000",
            EXTRACTION_MAX_ITEMS="150000",
        )
    }
    started = {name: Stack(env, tmp_path_factory.mktemp(name)) for name, env in envs.items()}
    try:
        for stack in started.values():
            stack.api.start()
            stack.worker.start()
        yield started
    finally:
        for stack in started.values():
            stack.worker.stop()
            stack.api.stop()


def test_limits_come_from_the_settings_with_their_own_codes(stacks: dict[str, Stack], tmp_path: Path) -> None:
    url = stacks["limited"].url
    big = tmp_path / "big.csv"
    big.write_text("a,b,c\n" + "".join(f"{n},x{n},y{n}\n" for n in range(60_000)))
    too_big = submit(url, big)  # 1.2 MB, streamed to Granian
    assert too_big.status_code == 413
    assert too_big.json()["code"] == "payload_too_large"

    failed_with(url, "multipage.pdf", "too_many_pages")
    slow = tmp_path / "slow.csv"
    slow.write_text("a,b,c\n" + "".join(f"{n},x{n},y{n}\n" for n in range(40_000)))  # about 4 s
    job = failed_with(url, slow, "document_timeout")
    assert "1.5 s" in job["error"]["message"]
    wide = tmp_path / "wide.csv"
    wide.write_text(("," * 99 + "\n") * 2_000)  # 200 KB, 200,000 empty cells
    job = failed_with(url, wide, "document_too_large")
    assert job["error"]["message"] == (
        "The document holds about 200000 paragraphs and table cells; at most 150000 are accepted"
    )

    result = succeeded(url, "report.docx")  # within every limit; its Docling document is over 2 kB
    assert result["document"] is None
    response = httpx.get(f"{url}{result['document_file']['url']}", headers=tokens.headers(), timeout=10)
    assert cells(response.json()["tables"][0]) == docs.DOCX_TABLE
