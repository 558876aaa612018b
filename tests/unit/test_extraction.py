"""The extraction engine on real documents: docling conversions of the committed fixtures, no mocks.

The fixtures and the sentences they hold come from ``tests/data/make_documents.py``.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.data import make_documents as docs
from xenios_ai.errors import InvalidInput, JobCancelled, LimitExceeded, UnsupportedMediaType, XeniosError
from xenios_ai.extraction import (
    SNIFF_BYTES,
    DocumentFormat,
    ExtractionOptions,
    ExtractionResult,
    Extractor,
    sniff_document_file,
    sniff_document_format,
)
from xenios_ai.extraction.job import ExtractionRequest, extraction_text, split_password
from xenios_ai.extraction.models import DocumentLimits
from xenios_ai.extraction.watchdog import DeadlineExceeded, Watchdog

pytestmark = pytest.mark.engine  # builds the engine: not in `just test-fast`

DOCUMENTS = docs.DOCUMENTS
MULTIPAGE = DOCUMENTS / "multipage.pdf"
MIXED_SET = {
    "multipage.pdf": DocumentFormat.PDF,
    "truncated.pdf": DocumentFormat.PDF,
    "report.docx": DocumentFormat.DOCX,
    "slides.pptx": DocumentFormat.PPTX,
    "workbook.xlsx": DocumentFormat.XLSX,
    "page.html": DocumentFormat.HTML,
    "notes.md": DocumentFormat.MARKDOWN,
    "sessions.csv": DocumentFormat.CSV,
}


@pytest.fixture(scope="module")
def extractor() -> Extractor:
    return Extractor()


def flat(text: str | None) -> str:
    """Whitespace-normalized text: the native PDF pipeline emits one paragraph per printed line."""
    assert text is not None
    return " ".join(text.split())


def extract(extractor: Extractor, name: str, fmt: DocumentFormat, **options: object) -> ExtractionResult:
    return extractor.extract(DOCUMENTS / name, fmt, msgspec.convert(options, ExtractionOptions))


def assert_still_works(extractor: Extractor) -> None:
    result = extractor.extract(MULTIPAGE, DocumentFormat.PDF, ExtractionOptions(output_formats=("text",)))
    assert result.status == "success"
    assert docs.PDF_PAGE_MARKERS[4] in flat(result.text)


# --- Sniffing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("multipage.pdf", DocumentFormat.PDF),
        ("encrypted.pdf", DocumentFormat.PDF),
        ("truncated.pdf", DocumentFormat.PDF),
        ("report.docx", DocumentFormat.DOCX),
        ("slides.pptx", DocumentFormat.PPTX),
        ("workbook.xlsx", DocumentFormat.XLSX),
        ("page.html", DocumentFormat.HTML),
        ("notes.md", DocumentFormat.MARKDOWN),
        ("sessions.csv", DocumentFormat.CSV),
        ("image_renamed.pdf", None),
    ],
)
def test_sniffing_tells_each_fixture_from_its_bytes(name: str, expected: DocumentFormat | None) -> None:
    path = DOCUMENTS / name
    assert sniff_document_file(path) is expected
    # The bytes decide, not the name: an upload called "upload.bin" gets the same answer.
    assert sniff_document_format(path.read_bytes()[:SNIFF_BYTES], "upload.bin") is expected


@pytest.mark.parametrize(
    ("head", "filename", "expected"),
    [
        (random.Random(1).randbytes(4096), "scan.pdf", None),
        (b"", None, None),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), "old.doc", None),  # legacy Office (OLE2)
        ("Caf\xe9 au lait".encode("latin-1"), "notes.txt", None),  # not UTF-8
        (b"Just a few words of plain text.\n", "notes.txt", DocumentFormat.MARKDOWN),
        (b"name;city\nAna;Porto\nLu;Braga\n", None, DocumentFormat.CSV),
        (b"Dear coach, thanks.\n\nSee you on Monday.\n", None, DocumentFormat.MARKDOWN),
        (b"single column\nrow\n", "list.csv", DocumentFormat.CSV),
        (b"<!-- saved -->\n<!DOCTYPE html><html><body>x</body></html>", None, DocumentFormat.HTML),
        (b"PK\x03\x04" + bytes(26) + b"mimetype", "book.epub", None),  # a ZIP that is not OOXML
    ],
)
def test_sniffing_edge_cases(head: bytes, filename: str | None, expected: DocumentFormat | None) -> None:
    assert sniff_document_format(head, filename) is expected


def test_sniffing_a_cut_ooxml_prefix_falls_back_to_the_extension() -> None:
    head = (DOCUMENTS / "report.docx").read_bytes()[:100]  # the first member ([Content_Types].xml) only
    assert sniff_document_format(head, "report.docx") is DocumentFormat.DOCX
    assert sniff_document_format(head, "report.bin") is None


def zip_prefix(*names: str) -> bytes:
    """ZIP local file headers (empty members) of ``names``: what the first bytes of a package show."""
    return b"".join(
        b"PK\x03\x04" + bytes(22) + struct.pack("<HH", len(name), 0) + name.encode() for name in names
    )


@pytest.mark.parametrize(
    ("names", "filename", "expected"),
    [
        (("_rels/.rels", "docProps/app.xml", "ppt/slides/slide1.xml"), "upload.bin", DocumentFormat.PPTX),
        (("_rels/.rels", "xl/workbook.xml"), "upload.bin", DocumentFormat.XLSX),
        # Package parts only: the name tells.
        (("_rels/.rels", "docProps/thumbnail.jpeg"), "deck.pptx", DocumentFormat.PPTX),
        (("_rels/.rels", "docProps/thumbnail.jpeg"), "upload.bin", None),
        (("word/document.xml", "ppt/slides/slide1.xml"), "deck.pptx", DocumentFormat.PPTX),  # both: the name
        (("META-INF/container.xml", "OEBPS/content.opf"), "book.docx", None),  # not an Office package
    ],
)
def test_sniffing_ooxml_from_the_parts_in_the_prefix(
    names: tuple[str, ...], filename: str, expected: DocumentFormat | None
) -> None:
    assert sniff_document_format(zip_prefix(*names), filename) is expected


@pytest.mark.parametrize("name", ["report.docx", "slides.pptx", "workbook.xlsx"])
def test_a_package_with_its_content_types_last_is_recognised_and_converts(
    extractor: Extractor, tmp_path: Path, name: str
) -> None:
    """Some writers store ``[Content_Types].xml`` last, beyond the first 8 KiB the API sniffs."""
    data = docs.package_with_content_types_last(DOCUMENTS / name)
    fmt = sniff_document_format(data[:SNIFF_BYTES], "upload.bin")
    assert fmt is MIXED_SET[name]
    upload = tmp_path / "upload"
    upload.write_bytes(data)
    assert sniff_document_file(upload) is fmt
    result = extractor.extract(upload, fmt)
    assert result.status == "success"
    assert result.markdown == extract(extractor, name, fmt).markdown


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"# PDF notes\n\nEvery PDF starts with %PDF-1.7 and ends with %%EOF.\n", DocumentFormat.MARKDOWN),
        (b"<html><body><p>The header %PDF-1.4 comes first.</p></body></html>", DocumentFormat.HTML),
        (b"%PDF-1.7 is the header of a PDF\n", DocumentFormat.PDF),  # at the start: the magic number
        (b"\r\n  \n%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", DocumentFormat.PDF),  # after whitespace
        (b"\x00\x05\x16\x07junk\x00\x00%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", DocumentFormat.PDF),  # binary junk
        (b"\x89PNG\r\n\x1a\n" + bytes(1100) + b"%PDF-1.4\n", None),  # past the first KiB
    ],
)
def test_pdf_magic_is_the_start_of_a_file_not_a_mention_in_text(
    head: bytes, expected: DocumentFormat | None
) -> None:
    assert sniff_document_format(head, "upload.bin") is expected


def test_a_pdf_behind_a_little_binary_junk_converts(extractor: Extractor, tmp_path: Path) -> None:
    junky = tmp_path / "junky.pdf"
    junky.write_bytes(b"\x00\x05\x16\x07" + bytes(100) + MULTIPAGE.read_bytes())
    assert sniff_document_file(junky) is DocumentFormat.PDF
    result = extractor.extract(junky, DocumentFormat.PDF, ExtractionOptions(output_formats=("text",)))
    assert (result.status, result.page_count) == ("success", 4)
    assert docs.PDF_PAGE_MARKERS[4] in flat(result.text)


@pytest.mark.timeout(10)
def test_sniffing_many_html_comments_takes_linear_time() -> None:
    """A comment ends at its first ``-->``: ``<!---->`` * 40 + ``x`` once took days (exponential regex)."""
    assert sniff_document_format(b"<!---->" * 40 + b"x", "x.txt") is DocumentFormat.MARKDOWN
    assert sniff_document_format(b"<!---->" * 10_000 + b"x", "x.txt") is DocumentFormat.MARKDOWN
    page = b"<!-- saved -->\n" * 10_000 + b"<!DOCTYPE html><html><body>x</body></html>"
    assert sniff_document_format(page, None) is DocumentFormat.HTML
    assert sniff_document_format(b"<!-- one --> text --> <html>", None) is DocumentFormat.MARKDOWN
    assert sniff_document_format(b'<?xml version="1.0"?>\n<!-- a --><html>', None) is DocumentFormat.HTML


@pytest.mark.parametrize("module", ["xenios_ai.extraction", "xenios_ai.api.app", "xenios_ai.kinds"])
def test_importing_the_api_side_does_not_import_docling(module: str) -> None:
    """The API process sniffs and submits; only workers pay for docling (seconds, hundreds of MB)."""
    code = (
        f"import sys, {module}; heavy = sorted({{'docling', 'docling_core', 'pypdfium2'}} & set(sys.modules)); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- Options and results ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"page_range": [3, 1]}', b'{"page_range": [0, 2]}', b'{"output_formats": ["pdf"]}', b'{"ocr": true}'],
)
def test_invalid_options_fail_validation(body: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(body, type=ExtractionOptions)


def test_options_repr_hides_the_password() -> None:
    assert "s3cret" not in repr(ExtractionOptions(password="s3cret"))
    assert "s3cret" not in repr(ExtractionRequest(password="s3cret", then=["session_summary"]))


@pytest.mark.parametrize(
    "body",
    [
        b'{"then": ["session_summary", "session_summary"]}',
        b'{"then": ["world_domination"]}',
        b'{"then": ["session_summary"], "output_formats": ["json"]}',
        b'{"page_range": [2, 1], "then": []}',
        b'{"unknown": 1}',
    ],
)
def test_invalid_job_requests_fail_validation(body: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(body, type=ExtractionRequest)


def test_the_password_is_split_from_the_job_input() -> None:
    request = msgspec.json.decode(
        b'{"password": "s3cret", "page_range": [1, 2], "then": ["insight_generation"]}',
        type=ExtractionRequest,
    )
    job_input, secret = split_password(request)
    assert secret == b"s3cret"
    assert b"s3cret" not in msgspec.json.encode(job_input)
    assert job_input == msgspec.structs.replace(request, password=None)
    assert split_password(job_input) == (job_input, None)


def test_a_follow_up_reads_the_markdown_or_else_the_text() -> None:
    assert extraction_text({"markdown": "# Notes", "text": "Notes"}) == "# Notes"
    assert extraction_text({"markdown": None, "text": "Notes"}) == "Notes"
    assert extraction_text({"markdown": None, "text": None}) is None
    assert extraction_text(None) is None


def test_result_round_trips_through_json(extractor: Extractor) -> None:
    result = extract(
        extractor, "report.docx", DocumentFormat.DOCX, output_formats=["markdown", "json", "text"]
    )
    decoded = msgspec.json.decode(msgspec.json.encode(result), type=ExtractionResult)
    assert decoded == result


# --- PDF --------------------------------------------------------------------------------------------------


def test_pdf_text_pages_and_outputs(extractor: Extractor) -> None:
    result = extract(
        extractor, "multipage.pdf", DocumentFormat.PDF, output_formats=["markdown", "json", "text"]
    )

    assert (result.status, result.pipeline, result.format) == ("success", "native", DocumentFormat.PDF)
    assert result.page_count == 4
    assert [(page.page, page.status) for page in result.pages] == [(n, "ok") for n in range(1, 5)]
    assert result.failed_pages == []
    for sentences in docs.PDF_PAGE_SENTENCES.values():
        for sentence in sentences:
            assert sentence in flat(result.markdown)
            assert sentence in flat(result.text)
    assert result.document is not None
    assert sorted(result.document["pages"]) == ["1", "2", "3", "4"]
    assert result.timings.total >= result.timings.convert > 0


def test_two_column_page_reads_column_by_column(extractor: Extractor) -> None:
    result = extract(
        extractor, "multipage.pdf", DocumentFormat.PDF, output_formats=["text"], page_range=[2, 2]
    )

    text = flat(result.text)
    assert docs.PDF_COLUMNS_HEADING in text
    # Each column comes out whole and in order; the native pipeline keeps the PDF's content order.
    assert docs.PDF_LEFT_COLUMN in text
    assert docs.PDF_RIGHT_COLUMN in text
    assert text.index(docs.PDF_LEFT_COLUMN) < text.index(docs.PDF_RIGHT_COLUMN)


def test_page_range_over_several_batches_keeps_page_numbers() -> None:
    small_batches = Extractor(pdf_batch_pages=2)
    result = small_batches.extract(
        MULTIPAGE, DocumentFormat.PDF, ExtractionOptions(page_range=(2, 9), output_formats=("text", "json"))
    )

    assert result.page_count == 4
    assert [page.page for page in result.pages] == [2, 3, 4]
    text = flat(result.text)
    assert docs.PDF_PAGE_MARKERS[1] not in text
    assert all(docs.PDF_PAGE_MARKERS[n] in text for n in (2, 3, 4))
    assert result.document is not None
    assert sorted(result.document["pages"]) == ["2", "3", "4"]
    marker_pages = {
        n: {prov["page_no"] for item in result.document["texts"] if docs.PDF_PAGE_MARKERS[n] in item["text"]
            for prov in item["prov"]}
        for n in (2, 3, 4)
    }  # fmt: skip
    assert marker_pages == {2: {2}, 3: {3}, 4: {4}}


@pytest.mark.parametrize(
    ("name", "fmt"), [("multipage.pdf", DocumentFormat.PDF), ("slides.pptx", DocumentFormat.PPTX)]
)
def test_page_range_past_the_end_is_invalid(extractor: Extractor, name: str, fmt: DocumentFormat) -> None:
    with pytest.raises(InvalidInput) as raised:
        extract(extractor, name, fmt, page_range=[5, 6])
    assert raised.value.code == "invalid_page_range"


def test_progress_is_reported_per_page_and_ends_at_one(extractor: Extractor) -> None:
    calls: list[tuple[float, str]] = []
    extractor.extract(
        MULTIPAGE, DocumentFormat.PDF, progress=lambda fraction, message: calls.append((fraction, message))
    )

    assert [message for _, message in calls if message.startswith("page")] == [
        f"page {n}/4" for n in range(1, 5)
    ]
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions)
    assert calls[-1] == (1.0, "done")


def test_chunks_carry_their_pages(extractor: Extractor) -> None:
    result = extract(extractor, "multipage.pdf", DocumentFormat.PDF, chunk_max_tokens=16)

    assert len(result.chunks) > 4
    for page, marker in docs.PDF_PAGE_MARKERS.items():
        holding = [chunk for chunk in result.chunks if marker in chunk.text]
        assert holding
        assert all(page in chunk.pages for chunk in holding)
    assert {page for chunk in result.chunks for page in chunk.pages} == {1, 2, 3, 4}


def test_encrypted_pdf_needs_the_right_password(extractor: Extractor) -> None:
    with pytest.raises(InvalidInput) as raised:
        extract(extractor, "encrypted.pdf", DocumentFormat.PDF)
    assert raised.value.code == "password_required"

    with pytest.raises(InvalidInput) as raised:
        extract(extractor, "encrypted.pdf", DocumentFormat.PDF, password="wrong")
    assert raised.value.code == "password_invalid"

    result = extract(extractor, "encrypted.pdf", DocumentFormat.PDF, password=docs.PDF_PASSWORD)
    assert result.status == "success"
    assert docs.PDF_PAGE_SENTENCES[1][0] in flat(result.markdown)
    assert_still_works(extractor)


def test_truncated_pdf_is_a_partial_success_with_the_missing_pages(extractor: Extractor) -> None:
    # pypdfium2 refuses the file; docling-parse recovers the first two pages and calls it a success.
    result = extract(extractor, "truncated.pdf", DocumentFormat.PDF, output_formats=["text"])

    assert result.status == "partial_success"
    assert result.page_count == 4
    assert result.failed_pages == [3, 4]
    assert [page.status for page in result.pages] == ["ok", "ok", "failed", "failed"]
    assert "damaged" in result.warnings[0]
    text = flat(result.text)
    assert docs.PDF_PAGE_MARKERS[1] in text
    assert docs.PDF_PAGE_MARKERS[2] in text
    assert docs.PDF_PAGE_MARKERS[3] not in text
    assert_still_works(extractor)


def test_non_pdf_bytes_are_an_unsupported_format(extractor: Extractor, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedMediaType) as raised:
        extract(extractor, "image_renamed.pdf", DocumentFormat.PDF)
    assert raised.value.code == "unsupported_format"

    noise = tmp_path / "noise.pdf"
    noise.write_bytes(random.Random(2).randbytes(20_000))
    with pytest.raises(UnsupportedMediaType):
        extractor.extract(noise, DocumentFormat.PDF)
    assert_still_works(extractor)


@pytest.mark.timeout(60)
def test_a_damaged_pdf_of_unterminated_objects_is_read_in_linear_time(
    extractor: Extractor, tmp_path: Path
) -> None:
    """pdfium refuses it, so the page count is looked up in the raw bytes: 128 KB once took 10 s, 1.6 MB
    would have taken most of an hour, holding the GIL (so even the document timeout could not fire)."""
    damaged = tmp_path / "damaged.pdf"
    damaged.write_bytes(b"%PDF-1.4\n" + b"1 0 obj " * 200_000)
    with pytest.raises(InvalidInput) as raised:
        extractor.extract(damaged, DocumentFormat.PDF)
    assert raised.value.code == "unreadable_document"
    assert_still_works(extractor)


@pytest.mark.parametrize("page_range", [None, (1, 2)])
def test_a_pdf_without_pages_is_unreadable(
    extractor: Extractor, tmp_path: Path, page_range: tuple[int, int] | None
) -> None:
    """Whatever the page range, a PDF without pages is the document's fault, not the range's."""
    import pypdfium2 as pdfium  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    empty = tmp_path / "empty.pdf"
    document = pdfium.PdfDocument.new()  # a page tree with /Count 0, which pdfium itself will not load
    document.save(empty)
    document.close()
    with pytest.raises(InvalidInput) as raised:
        extractor.extract(empty, DocumentFormat.PDF, ExtractionOptions(page_range=page_range))
    assert raised.value.code == "unreadable_document"


def test_pdf_header_with_garbage_is_unreadable(extractor: Extractor, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"%PDF-1.7\n" + random.Random(3).randbytes(20_000))
    with pytest.raises(InvalidInput) as raised:
        extractor.extract(garbage, DocumentFormat.PDF)
    assert raised.value.code == "unreadable_document"
    assert_still_works(extractor)


def test_too_many_pages_is_refused_before_converting() -> None:
    limited = Extractor(max_pages=3)
    calls: list[str] = []
    with pytest.raises(LimitExceeded) as raised:
        limited.extract(MULTIPAGE, DocumentFormat.PDF, progress=lambda _, message: calls.append(message))
    assert raised.value.code == "too_many_pages"
    assert raised.value.extra == {"page_count": 4, "max_pages": 3}
    assert not [message for message in calls if message.startswith("page")]
    # A damaged PDF (page count from docling-parse) hits the same limit.
    with pytest.raises(LimitExceeded):
        Extractor(max_pages=1).extract(DOCUMENTS / "truncated.pdf", DocumentFormat.PDF)
    assert limited.extract(DOCUMENTS / "slides.pptx", DocumentFormat.PPTX).status == "success"


def test_cancellation_from_the_progress_callback_propagates(extractor: Extractor) -> None:
    cancelled = JobCancelled("cancelled by the user")
    calls: list[str] = []

    def progress(_: float, message: str) -> None:
        calls.append(message)
        if message == "page 2/4":
            raise cancelled

    with pytest.raises(JobCancelled) as raised:
        extractor.extract(MULTIPAGE, DocumentFormat.PDF, progress=progress)
    assert raised.value is cancelled
    assert calls[-1] == "page 2/4"
    assert_still_works(extractor)


def test_document_timeout_stops_a_pdf_between_pages() -> None:
    hurried = Extractor(document_timeout=1e-6)
    with pytest.raises(LimitExceeded) as raised:
        hurried.extract(MULTIPAGE, DocumentFormat.PDF)
    assert raised.value.code == "document_timeout"


def test_document_timeout_stops_formats_without_pages(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    big.write_text("a,b,c\n" + "".join(f"{n},x{n},y{n}\n" for n in range(30_000)))
    hurried = Extractor(document_timeout=0.3, limits=DocumentLimits(max_items=100_000))  # 90,003 cells
    started = time.monotonic()
    with pytest.raises(LimitExceeded) as raised:
        hurried.extract(big, DocumentFormat.CSV)
    assert raised.value.code == "document_timeout"
    assert time.monotonic() - started < 3
    assert hurried.extract(DOCUMENTS / "sessions.csv", DocumentFormat.CSV).status == "success"


# --- Documents too large for memory -------------------------------------------------------------------

MIB = 1024 * 1024


def csv_of_empty_cells(rows: int, columns: int) -> bytes:
    return ("," * (columns - 1) + "\n").encode() * rows


@pytest.mark.parametrize(
    ("name", "fmt", "make", "message"),
    [
        # python-pptx reads every member: 80 MiB of zeros, 80 KB on disk.
        ("bomb.pptx", DocumentFormat.PPTX,
         lambda: docs.package_with_zeros(DOCUMENTS / "slides.pptx", "ppt/media/zeros.bin", 80 * MIB),
         "A part of the package unpacks to 83886080 bytes; at most 67108864 are accepted"),
        ("bomb.docx", DocumentFormat.DOCX,
         lambda: docs.package_with_zeros(DOCUMENTS / "report.docx", "word/media/zeros.bin", 20 * MIB),
         r"A part of the package is compressed 10\d\d to 1; at most 100 to 1 is accepted"),
        ("cells.xlsx", DocumentFormat.XLSX, lambda: docs.workbook_with_cells(60_000),
         "The document holds about 60000 paragraphs and table cells; at most 50000 are accepted"),
        ("cells.csv", DocumentFormat.CSV, lambda: csv_of_empty_cells(2_000, 100),  # 200 KB
         "The document holds about 200000 paragraphs and table cells; at most 50000 are accepted"),
        ("table.md", DocumentFormat.MARKDOWN, lambda: b"|a|b|\n|-|-|\n" + b"|1|2|\n" * 30_000,
         "The document holds about 60004 paragraphs and table cells; at most 50000 are accepted"),
        ("table.html", DocumentFormat.HTML,
         lambda: b"<table>" + b"<tr>" + b"<td>" * 10 * 6_000 + b"</table>",
         "The document holds about 60002 paragraphs and table cells; at most 50000 are accepted"),
        ("long.md", DocumentFormat.MARKDOWN, lambda: b"word " * MIB,
         "The markdown document is 5242880 bytes; at most 4194304 are accepted"),
    ],
)  # fmt: skip
def test_documents_too_large_for_memory_are_refused_before_converting(
    extractor: Extractor, tmp_path: Path, name: str, fmt: DocumentFormat, make: Any, message: str
) -> None:
    """Each of these got the worker process killed for memory (docling's own archive limits are 512 MB)."""
    path = tmp_path / name
    path.write_bytes(make())
    assert path.stat().st_size < 6 * MIB
    calls: list[str] = []
    with pytest.raises(LimitExceeded) as raised:
        extractor.extract(path, fmt, progress=lambda _, message: calls.append(message))
    assert (raised.value.code, raised.value.status) == ("document_too_large", 422)
    assert re.fullmatch(message, raised.value.detail), raised.value.detail
    assert calls == ["converting"]
    assert_still_works(extractor)


def test_package_limits_come_from_the_extractor(tmp_path: Path) -> None:
    report = DOCUMENTS / "report.docx"
    with pytest.raises(LimitExceeded) as raised:
        Extractor(limits=DocumentLimits(max_archive_members=5)).extract(report, DocumentFormat.DOCX)
    assert raised.value.detail == "The package has 17 parts; at most 5 are accepted"
    small = Extractor(limits=DocumentLimits(max_archive_bytes=20_000, max_items=10))
    with pytest.raises(LimitExceeded) as raised:
        small.extract(report, DocumentFormat.DOCX)
    assert raised.value.code == "document_too_large"
    assert raised.value.detail.startswith("The package unpacks to ")
    with pytest.raises(LimitExceeded) as raised:
        small.extract(DOCUMENTS / "notes.md", DocumentFormat.MARKDOWN)
    assert raised.value.extra == {"items": 11, "max_items": 10}
    assert small.extract(DOCUMENTS / "sessions.csv", DocumentFormat.CSV).status == "success"


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed here")
@pytest.mark.parametrize("artifacts_path", [None, "/nonexistent/docling-models"])
def test_layout_mode_without_models_says_how_to_install_them(artifacts_path: str | None) -> None:
    with pytest.raises(XeniosError) as raised:
        Extractor(pipeline="layout", artifacts_path=artifacts_path)
    assert raised.value.code == "layout_models_unavailable"
    assert "torch" in raised.value.detail
    assert "docling-tools models download" in raised.value.detail
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# --- Other formats ----------------------------------------------------------------------------------------


def test_docx_headings_list_and_table(extractor: Extractor) -> None:
    result = extract(extractor, "report.docx", DocumentFormat.DOCX)

    assert (result.status, result.page_count, result.pages) == ("success", 0, [])
    markdown = result.markdown or ""
    assert f"## {docs.DOCX_TITLE}" in markdown
    assert f"### {docs.DOCX_GOALS_HEADING}" in markdown
    assert docs.DOCX_INTRO in markdown
    assert all(f"- {bullet}" in markdown for bullet in docs.DOCX_BULLETS)
    assert result.document is not None
    [table] = result.document["tables"]
    cells = {
        (cell["start_row_offset_idx"], cell["start_col_offset_idx"]): cell["text"]
        for cell in table["data"]["table_cells"]
    }
    assert cells == {(r, c): value for r, row in enumerate(docs.DOCX_TABLE) for c, value in enumerate(row)}

    headings = {chunk.text.splitlines()[0]: chunk.headings for chunk in result.chunks}
    assert headings[f"- {docs.DOCX_BULLETS[0]}"] == [docs.DOCX_TITLE, docs.DOCX_GOALS_HEADING]
    [table_chunk] = [chunk for chunk in result.chunks if "Intervals" in chunk.text]
    assert table_chunk.headings == [docs.DOCX_TITLE, docs.DOCX_SCHEDULE_HEADING]


def test_pptx_slides_are_pages(extractor: Extractor) -> None:
    result = extract(extractor, "slides.pptx", DocumentFormat.PPTX)

    assert result.page_count == 2
    assert [page.status for page in result.pages] == ["ok", "ok"]
    for slide, (title, bullets) in enumerate(docs.PPTX_SLIDES, start=1):
        assert f"# {title}" in (result.markdown or "")
        [chunk] = [chunk for chunk in result.chunks if bullets[0] in chunk.text]
        assert (chunk.headings, chunk.pages) == ([title], [slide])


def test_xlsx_sheets_become_tables(extractor: Extractor) -> None:
    result = extract(extractor, "workbook.xlsx", DocumentFormat.XLSX)

    assert result.page_count == 2
    assert result.document is not None
    tables = [
        [[cell["text"] for cell in table["data"]["table_cells"] if cell["start_row_offset_idx"] == row]
         for row in range(table["data"]["num_rows"])]
        for table in result.document["tables"]
    ]  # fmt: skip
    expected = [[[str(value) for value in row] for row in rows] for rows in docs.XLSX_SHEETS.values()]
    assert tables == expected


def test_html_heading_paragraph_and_table(extractor: Extractor) -> None:
    result = extract(extractor, "page.html", DocumentFormat.HTML)

    markdown = result.markdown or ""
    assert f"# {docs.HTML_HEADING}" in markdown
    assert docs.HTML_PARAGRAPH in markdown
    assert result.document is not None
    [table] = result.document["tables"]
    assert [cell["text"] for cell in table["data"]["table_cells"]] == [
        v for row in docs.HTML_TABLE for v in row
    ]
    assert result.chunks[0].headings == [docs.HTML_HEADING]


def test_markdown_headings_and_list(extractor: Extractor, tmp_path: Path) -> None:
    # Stored without an extension, as the upload layer may do: the format argument decides.
    upload = tmp_path / "upload"
    upload.write_bytes((DOCUMENTS / "notes.md").read_bytes())
    result = extractor.extract(upload, DocumentFormat.MARKDOWN)

    markdown = result.markdown or ""
    assert f"# {docs.MD_HEADING}" in markdown
    assert all(f"- {item}" in markdown for item in docs.MD_ITEMS)
    [list_chunk] = [chunk for chunk in result.chunks if docs.MD_ITEMS[0] in chunk.text]
    assert list_chunk.headings == [docs.MD_HEADING, docs.MD_SUBHEADING]


def test_csv_rows_become_a_table(extractor: Extractor) -> None:
    result = extract(extractor, "sessions.csv", DocumentFormat.CSV)

    assert result.document is not None
    [table] = result.document["tables"]
    assert [cell["text"] for cell in table["data"]["table_cells"]] == [
        v for row in docs.CSV_ROWS for v in row
    ]


def test_a_docx_that_is_not_one_is_an_unsupported_format(extractor: Extractor) -> None:
    with pytest.raises(UnsupportedMediaType):
        extractor.extract(DOCUMENTS / "slides.pptx", DocumentFormat.DOCX)
    assert_still_works(extractor)


def test_concurrent_extractions_match_sequential_ones(extractor: Extractor) -> None:
    """Workers may run several jobs on one Extractor from different threads."""
    jobs = list(MIXED_SET.items()) * 3

    def run(job: tuple[str, DocumentFormat]) -> ExtractionResult:
        result = extractor.extract(
            DOCUMENTS / job[0], job[1], ExtractionOptions(output_formats=("markdown",))
        )
        return msgspec.structs.replace(
            result, timings=msgspec.structs.replace(result.timings, convert=0, export=0, chunking=0, total=0)
        )

    sequential = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(run, jobs)) == sequential


def test_the_watchdog_fires_again_when_its_exception_was_swallowed() -> None:
    """The deadline's exception can land in code that swallows it (a weakref callback run by the garbage
    collector); the watchdog repeats it until the block is left."""

    swallowed = 0
    give_up = time.monotonic() + 30

    def busy_swallowing_once() -> None:
        nonlocal swallowed
        with Watchdog(0.05):
            while time.monotonic() < give_up:
                try:
                    while time.monotonic() < give_up:
                        pass
                except DeadlineExceeded:
                    if swallowed:
                        raise
                    swallowed += 1  # as an "Exception ignored" callback would

    with pytest.raises(DeadlineExceeded):
        busy_swallowing_once()
    assert swallowed == 1
    time.sleep(1.5)  # left the block: no repeat may arrive now


def test_the_watchdog_sends_no_repeat_once_the_thread_left_the_guarded_function() -> None:
    """Its exception can land as ``__exit__`` starts, before the block is disarmed (seen under load): the
    repeats must then stop once the thread has left the function, not hit whatever it runs next."""

    def guarded_and_interrupted_on_exit() -> None:
        watchdog = Watchdog(0.05)
        watchdog.__enter__()  # left below without __exit__, as if the exception had hit __exit__'s first line
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            pass

    with pytest.raises(DeadlineExceeded):
        guarded_and_interrupted_on_exit()
    deadline = time.monotonic() + 2.5  # past two repeats
    while time.monotonic() < deadline:  # Python bytecodes all along: a repeat would be raised here
        pass
