"""The `Extractor`: Docling conversion with limits, per-page progress, exports and chunks (workers only).

Docling, docling-core and pypdfium2 are imported inside the functions that use them, so importing this
module stays cheap; building an `Extractor` imports them (seconds).
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import ctypes
import functools
import importlib
import io
import os
import re
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from xenios_ai.errors import InvalidInput, LimitExceeded, UnsupportedMediaType, XeniosError
from xenios_ai.extraction.models import (
    DEFAULT_CHUNK_MAX_TOKENS,
    Chunk,
    DocumentLimits,
    ExtractionOptions,
    ExtractionResult,
    PageStatus,
    Pipeline,
    ProgressCallback,
    Timings,
)
from xenios_ai.extraction.sniff import OOXML_FORMATS, SUFFIXES, DocumentFormat, sniff_document_file

if TYPE_CHECKING:
    from types import FrameType

    from docling.datamodel.document import ConversionResult
    from docling.datamodel.progress import ConversionProgressEvent
    from docling.document_converter import DocumentConverter, FormatOption
    from docling_core.types.doc.document import DoclingDocument

_LAYOUT_HINT = (
    "Layout mode needs torch (CPU) and the docling layout models. Install them with "
    "`uv pip install 'docling-slim[models-local]==2.142.1' "
    "--extra-index-url https://download.pytorch.org/whl/cpu`, "
    "download the models with `docling-tools models download layout tableformer -o $DOCLING_ARTIFACTS_PATH` "
    "and start the worker with DOCLING_ARTIFACTS_PATH set to that folder; or use the native pipeline."
)
_DOCLING_FORMATS = {
    DocumentFormat.PDF: "pdf",
    DocumentFormat.DOCX: "docx",
    DocumentFormat.PPTX: "pptx",
    DocumentFormat.XLSX: "xlsx",
    DocumentFormat.HTML: "html",
    DocumentFormat.MARKDOWN: "md",
    DocumentFormat.CSV: "csv",
}
#: Share of the progress bar for the pages; exporting and chunking take the rest.
_PAGES_SHARE = 0.9


class _Abort(BaseException):
    """Carries an exception out of docling, which swallows every `Exception` its progress callbacks raise."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


class _DeadlineExceeded(BaseException):
    """Raised into the converting thread by `_Watchdog`."""


class Extractor:
    """Docling conversion with limits, per-page progress and chunks; build one per worker process.

    ``pipeline`` picks the PDF pipeline: "native" (model-free, default) or "layout" (layout and table models,
    needs torch and the models in ``artifacts_path`` or DOCLING_ARTIFACTS_PATH; checked here, at build
    time). ``pdf_batch_pages`` bounds memory: longer PDFs are converted in page ranges of that size, and
    ``limits`` refuses other documents that would not fit in memory (see `DocumentLimits`).
    `extract` may be called from several threads at once (the docling converter and its pipelines are
    shared; each call keeps its own state).
    """

    def __init__(
        self,
        pipeline: Pipeline = "native",
        *,
        artifacts_path: str | None = None,
        max_pages: int = 500,
        document_timeout: float = 300.0,
        pdf_threads: int = 1,
        pdf_batch_pages: int = 50,
        limits: DocumentLimits | None = None,
    ) -> None:
        if pipeline not in ("native", "layout"):
            raise ValueError(f"unknown pipeline {pipeline!r}")
        self.pipeline: Pipeline = pipeline
        self.max_pages = max_pages
        self.document_timeout = document_timeout
        self.pdf_threads = pdf_threads
        self.pdf_batch_pages = pdf_batch_pages
        self.limits = limits or DocumentLimits()
        self.artifacts_path = artifacts_path or os.environ.get("DOCLING_ARTIFACTS_PATH") or None
        _force_hub_offline()

        from docling.datamodel.base_models import InputFormat  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
        from docling.document_converter import DocumentConverter  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

        self._converter: DocumentConverter = DocumentConverter(
            allowed_formats=[InputFormat(value) for value in _DOCLING_FORMATS.values()],
            format_options={
                InputFormat.PDF: self._pdf_format_option(password=None),
                **self._office_format_options(),
            },
        )
        with self._layout_errors():
            self._converter.initialize_pipeline(InputFormat.PDF)
        # Import now what the first extraction would otherwise import on its clock (about 1 s).
        for module in ("docling_core.transforms.chunker.hybrid_chunker", "pypdfium2"):
            importlib.import_module(module)
        _approx_tokenizer_class()

    def extract(
        self,
        path: Path,
        fmt: DocumentFormat,
        options: ExtractionOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> ExtractionResult:
        """Convert the document at ``path`` and export what ``options`` asks for.

        Raises `InvalidInput` (``password_required``, ``password_invalid``, ``unreadable_document``,
        ``invalid_page_range``), `LimitExceeded` (``too_many_pages``, ``document_too_large``,
        ``document_timeout``),
        `UnsupportedMediaType` (``unsupported_format``: the bytes are not ``fmt``) and, in layout mode,
        `XeniosError` (``layout_models_unavailable``). Whatever ``progress`` raises (`JobCancelled`)
        propagates unchanged and stops the conversion.
        """
        options = options or ExtractionOptions()
        fmt = DocumentFormat(fmt)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(path)
        run = _Run(fmt=fmt, options=options, progress=progress, started=time.monotonic())
        try:
            with _Watchdog(self.document_timeout), _named_for(path, fmt) as source:
                result = self._extract(source, run)
        except _DeadlineExceeded:
            raise self._timeout_error() from None
        return result

    # The steps of one extraction ---------------------------------------------------------------------

    def _extract(self, source: Path, run: _Run) -> ExtractionResult:
        run.report(0.0, "converting")
        binary = run.fmt in (DocumentFormat.PDF, *OOXML_FORMATS.values())
        if binary and sniff_document_file(source) is not run.fmt:
            raise UnsupportedMediaType(
                f"The file is not a {run.fmt.value} document", code="unsupported_format"
            )
        _check_limits(source, run.fmt, self.limits)
        if run.fmt is DocumentFormat.PDF:
            document, pages, page_count = self._convert_pdf(source, run)
        else:
            document, pages, page_count = self._convert_other(source, run)
        run.timings["convert"] = time.monotonic() - run.started

        failed = [page.page for page in pages if page.status == "failed"]
        if len(failed) == len(pages) and (pages or run.fmt is DocumentFormat.PDF):
            raise InvalidInput("No page of the document could be read", code="unreadable_document")

        run.report(_PAGES_SHARE, "exporting")
        started = time.monotonic()
        wanted = set(run.options.output_formats)
        markdown = document.export_to_markdown() if "markdown" in wanted else None
        text = document.export_to_text() if "text" in wanted else None
        as_json = document.export_to_dict() if "json" in wanted else None
        run.timings["export"] = time.monotonic() - started

        started = time.monotonic()
        chunks = _chunk(document, run.options.chunk_max_tokens) if run.options.chunking else []
        run.timings["chunking"] = time.monotonic() - started
        run.report(1.0, "done")
        return ExtractionResult(
            format=run.fmt,
            status="partial_success" if failed else "success",
            pipeline=self.pipeline,
            page_count=page_count,
            pages=pages,
            failed_pages=failed,
            markdown=markdown,
            text=text,
            document=as_json,
            chunks=chunks,
            warnings=run.warnings,
            timings=Timings(
                convert=round(run.timings["convert"], 4),
                export=round(run.timings["export"], 4),
                chunking=round(run.timings["chunking"], 4),
                total=round(time.monotonic() - run.started, 4),
            ),
        )

    def _convert_pdf(self, source: Path, run: _Run) -> tuple[DoclingDocument, list[PageStatus], int]:
        """Convert a PDF in page ranges of ``pdf_batch_pages`` pages (memory), then join the ranges."""
        password = run.options.password or None
        info = _inspect_pdf(source, password)
        page_count = info.page_count
        if page_count is not None and page_count > self.max_pages:
            raise self._too_many_pages(page_count)
        if page_count == 0:  # whatever the page range: the document is at fault, not the range
            raise InvalidInput("The PDF has no pages", code="unreadable_document")
        first, last = run.options.page_range or (1, sys.maxsize)
        if page_count is not None:
            if first > page_count:
                raise InvalidInput(
                    f"page_range starts at page {first} but the document has {page_count} pages",
                    code="invalid_page_range",
                )
            last = min(last, page_count)
            ranges = [(start, min(last, start + self.pdf_batch_pages - 1)) for start in
                      range(first, last + 1, self.pdf_batch_pages)]  # fmt: skip
            run.total_pages = last - first + 1
        else:
            ranges = [(first, last)]  # pypdfium2 cannot read it: let docling-parse try in one go

        converter = self._converter if password is None else self._converter_with_password(password)
        documents: list[DoclingDocument] = []
        pages: list[PageStatus] = []
        for start, end in ranges:
            conv_res = self._convert(converter, source, run, (start, end))
            document = conv_res.document
            documents.append(document)
            errors = {error.page_no: error.error_message for error in conv_res.errors if error.page_no}
            upper = end if page_count is not None else max(document.pages, default=0)
            pages += [
                PageStatus(page, "ok")
                if page in document.pages
                else PageStatus(page, "failed", errors.get(page, "The page could not be converted"))
                for page in range(start, upper + 1)
            ]
        if info.damage is not None:
            page_count = self._account_for_damage(info, pages, run)
        assert page_count is not None
        return _join(documents), pages, page_count

    def _convert_other(self, source: Path, run: _Run) -> tuple[DoclingDocument, list[PageStatus], int]:
        page_range = run.options.page_range or (1, sys.maxsize)
        conv_res = self._convert(self._converter, source, run, page_range)
        document = conv_res.document
        page_count = conv_res.input.page_count
        if not page_count:
            return document, [], 0
        errors = {error.page_no: error.error_message for error in conv_res.errors if error.page_no}
        first, last = page_range[0], min(page_range[1], page_count)
        pages = [
            PageStatus(page, "failed", errors[page]) if page in errors else PageStatus(page, "ok")
            for page in range(first, last + 1)
        ]
        return document, pages, page_count

    def _convert(
        self, converter: DocumentConverter, source: Path, run: _Run, page_range: tuple[int, int]
    ) -> ConversionResult:
        """One docling conversion, its status mapped onto the error tree."""
        from docling.datamodel.base_models import ConversionStatus, FailureCategory  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

        relay = _ProgressRelay(run, deadline=run.started + self.document_timeout)
        aborted: BaseException | None = None
        try:
            with self._layout_errors():
                conv_res = converter.convert(
                    source,
                    raises_on_error=False,
                    max_num_pages=self.max_pages,
                    page_range=page_range,
                    progress_callback=relay,
                )
        except _Abort as abort:
            aborted = abort.error
        if aborted is not None:
            raise aborted  # outside the except block, so the caller's exception keeps its own context
        run.completed_pages += relay.pages_in_call

        if any(error.category == FailureCategory.TIMEOUT for error in conv_res.errors):
            raise self._timeout_error()
        expected = _DOCLING_FORMATS[run.fmt]
        if conv_res.status == ConversionStatus.SKIPPED or conv_res.input.format.value != expected:
            raise UnsupportedMediaType(
                f"The file is not a {run.fmt.value} document", code="unsupported_format"
            )
        if conv_res.status == ConversionStatus.FAILURE:
            if conv_res.input.page_count > self.max_pages:
                raise self._too_many_pages(conv_res.input.page_count)
            if 0 < conv_res.input.page_count < page_range[0]:
                raise InvalidInput(
                    f"page_range starts at page {page_range[0]} but the document has "
                    f"{conv_res.input.page_count} pages",
                    code="invalid_page_range",
                )
            if not conv_res.input.valid or run.fmt is not DocumentFormat.PDF:
                # Docling's messages name temporary paths and hashes: they go to the log, not to the caller.
                detail = "; ".join(error.error_message for error in conv_res.errors) or "conversion failed"
                logger.info("docling could not read the {} document: {}", run.fmt.value, detail)
                raise InvalidInput(
                    f"The {run.fmt.value} document could not be read: it is damaged or not a {run.fmt.value}",
                    code="unreadable_document",
                )
            # A valid PDF whose pages all failed: the pages say so, and `_extract` decides.
        return conv_res

    def _account_for_damage(self, info: _PdfInfo, pages: list[PageStatus], run: _Run) -> int:
        """Pages a damaged PDF declares but docling-parse did not recover count as failed."""
        recovered = sum(page.status == "ok" for page in pages)
        declared = info.declared_pages or 0
        last = max((page.page for page in pages), default=0)
        if declared > last:
            pages += [
                PageStatus(page, "failed", "The page is missing from the damaged file")
                for page in range(last + 1, declared + 1)
                if run.options.page_range is None or page <= run.options.page_range[1]
            ]
        run.warnings.append(
            f"The PDF is damaged ({(info.damage or '').rstrip('.')}); {recovered} of "
            f"{declared or 'an unknown number of'} pages were recovered"
        )
        return max(declared, last)

    # Docling configuration ---------------------------------------------------------------------------

    def _pdf_format_option(self, password: str | None) -> FormatOption:
        from docling.datamodel.backend_options import ThreadedDoclingParseBackendOptions  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
        from docling.datamodel.pipeline_options import NativePdfPipelineOptions, PdfPipelineOptions  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
        from docling.document_converter import NativePdfFormatOption, PdfFormatOption  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
        from pydantic import SecretStr  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

        secret = SecretStr(password) if password is not None else None
        if self.pipeline == "native":
            native = NativePdfPipelineOptions(
                parser_threads=self.pdf_threads,
                generate_page_images=False,
                generate_picture_images=False,
                document_timeout=self.document_timeout,
            )
            backend = ThreadedDoclingParseBackendOptions.model_validate(
                {
                    "parser_threads": self.pdf_threads,
                    "render_pages": False,
                    "include_bitmap_images": False,
                    # Pages decoded ahead of the pipeline: each one costs memory, one thread uses few.
                    "max_concurrent_results": 2 * self.pdf_threads,
                    "password": secret,
                }
            )
            return NativePdfFormatOption(pipeline_options=native, backend_options=backend)
        layout = PdfPipelineOptions(
            artifacts_path=self.artifacts_path,
            do_ocr=False,  # OCR needs yet another model; scanned PDFs are out of scope for now
            do_table_structure=True,
            document_timeout=self.document_timeout,
        )
        backend = ThreadedDoclingParseBackendOptions.model_validate(
            {"parser_threads": self.pdf_threads, "password": secret}
        )
        return PdfFormatOption(pipeline_options=layout, backend_options=backend)

    def _office_format_options(self) -> dict[Any, FormatOption]:
        """Word and Excel options with the package limits (docling's own defaults allow 512 MB)."""
        from docling.datamodel.backend_options import MsExcelBackendOptions, MsWordBackendOptions  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
        from docling.datamodel.base_models import InputFormat  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
        from docling.document_converter import ExcelFormatOption, WordFormatOption  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

        archive = {
            "max_total_bytes": self.limits.max_archive_bytes,
            "max_file_bytes": self.limits.max_archive_member_bytes,
            "max_member_count": self.limits.max_archive_members,
        }
        return {
            InputFormat.DOCX: WordFormatOption(backend_options=MsWordBackendOptions.model_validate(archive)),
            InputFormat.XLSX: ExcelFormatOption(
                backend_options=MsExcelBackendOptions.model_validate(archive)
            ),
        }

    def _converter_with_password(self, password: str) -> DocumentConverter:
        """A converter whose PDF backend gets ``password``; it shares the pipelines already built."""
        from docling.datamodel.base_models import InputFormat  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
        from docling.document_converter import DocumentConverter  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

        converter = DocumentConverter(
            allowed_formats=[InputFormat.PDF],
            format_options={InputFormat.PDF: self._pdf_format_option(password)},
        )
        converter.initialized_pipelines = self._converter.initialized_pipelines
        return converter

    @contextlib.contextmanager
    def _layout_errors(self) -> Iterator[None]:
        """In layout mode, missing torch or model files become ``layout_models_unavailable``."""
        if self.pipeline != "layout":
            yield
            return
        from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

        try:
            yield
        except (ImportError, FileNotFoundError, LocalEntryNotFoundError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "artifacts_path" not in str(exc):
                raise
            raise XeniosError(f"{exc}. {_LAYOUT_HINT}", code="layout_models_unavailable") from exc

    def _too_many_pages(self, page_count: int) -> LimitExceeded:
        return LimitExceeded(
            f"The document has {page_count} pages; at most {self.max_pages} are accepted",
            code="too_many_pages",
            extra={"page_count": page_count, "max_pages": self.max_pages},
        )

    def _timeout_error(self) -> LimitExceeded:
        return LimitExceeded(
            f"The document took longer than {self.document_timeout:g} s to convert",
            code="document_timeout",
            extra={"document_timeout": self.document_timeout},
        )


@dataclass
class _Run:
    """The state of one `Extractor.extract` call."""

    fmt: DocumentFormat
    options: ExtractionOptions
    progress: ProgressCallback | None
    started: float
    total_pages: int = 0
    completed_pages: int = 0
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(fraction, message)


class _ProgressRelay:
    """Docling progress callback: page events become ``(fraction, "page 3/10")`` calls to the caller.

    Also enforces the deadline between pages. Whatever the caller's callback raises leaves docling as
    `_Abort`.
    """

    def __init__(self, run: _Run, deadline: float) -> None:
        self.run = run
        self.deadline = deadline
        self.pages_in_call = 0
        self.aborted = False

    def __call__(self, event: ConversionProgressEvent) -> None:
        from docling.datamodel.progress import PageCompletedProgress  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

        if self.aborted:  # docling still reports the end of the document while the abort unwinds
            return
        try:
            if isinstance(event, PageCompletedProgress):
                self.pages_in_call += 1
                done = self.run.completed_pages + self.pages_in_call
                total = max(self.run.total_pages, done, event.total_pages)
                self.run.report(_PAGES_SHARE * done / total, f"page {done}/{total}")
            if time.monotonic() > self.deadline:
                raise _DeadlineExceeded
        except BaseException as exc:
            self.aborted = True
            raise _Abort(exc) from None


@dataclass
class _PdfInfo:
    page_count: int | None  # None when pypdfium2 cannot read the file
    damage: str | None = None
    declared_pages: int | None = None


def _inspect_pdf(path: Path, password: str | None) -> _PdfInfo:
    """Open the PDF with pypdfium2: page count, password check and damage, without converting anything."""
    import pypdfium2 as pdfium  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    import pypdfium2.raw as pdfium_c  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    try:
        pdf = pdfium.PdfDocument(path, password=password)
    except pdfium.PdfiumError as exc:
        if exc.err_code == pdfium_c.FPDF_ERR_PASSWORD:
            if password is None:
                raise InvalidInput(
                    "The PDF is encrypted: a password is required", code="password_required"
                ) from None
            raise InvalidInput("The password of the PDF is wrong", code="password_invalid") from None
        return _PdfInfo(page_count=None, damage=str(exc), declared_pages=_declared_page_count(path))
    try:
        return _PdfInfo(page_count=len(pdf))
    finally:
        pdf.close()


#: Bytes of a damaged PDF searched for its page tree (a root further in is not found: "unknown" pages).
_DECLARED_COUNT_SCAN_BYTES = 16 * 1024 * 1024
#: Farthest a /Count may lie from its node's /Type /Pages (a flat /Kids array of 5,000 pages: ~50 KB).
_PAGES_NODE_BYTES = 64 * 1024
# Each pattern starts with a literal and has no nested or adjacent overlapping repeats: linear scans.
_PAGES_TYPE = re.compile(rb"/Type\s*+/Pages\b")
_PAGES_COUNT = re.compile(rb"/Count\s++(\d{1,9})(?!\d)")
_END_OBJECT = re.compile(rb"endobj")


def _declared_page_count(path: Path) -> int | None:
    """The page count a damaged PDF's page tree root declares, if that object is still in its first bytes.

    The largest ``/Count`` of an object holding ``/Type /Pages`` (the root counts every page), looked for
    near the ``/Type /Pages``; objects are told apart by their ``endobj``. Single linear scans and
    bisection, over at most `_DECLARED_COUNT_SCAN_BYTES` (an ``obj ... endobj`` regex took quadratic time
    on ``1 0 obj`` repeated without an ``endobj``, holding the GIL for minutes).
    """
    with path.open("rb") as handle:
        data = handle.read(_DECLARED_COUNT_SCAN_BYTES)
    ends = [match.start() for match in _END_OBJECT.finditer(data)]
    counts = [(match.start(), int(match.group(1))) for match in _PAGES_COUNT.finditer(data)]
    positions = [position for position, _ in counts]
    # The objects holding a /Type /Pages (by the index of their endobj), and where in them it appears.
    spans: dict[int, tuple[int, int]] = {}
    for pages in _PAGES_TYPE.finditer(data):
        index = bisect.bisect_left(ends, pages.start())
        first = spans[index][0] if index in spans else pages.start()
        spans[index] = (first, pages.end())
    found: list[int] = []
    for index, (first, last) in spans.items():
        # From the previous endobj to the next one, and not further than a page tree node's size from a
        # /Type /Pages (a cut file may have lost its endobj).
        start = max(ends[index - 1] if index else 0, first - _PAGES_NODE_BYTES)
        stop = min(ends[index] if index < len(ends) else len(data), last + _PAGES_NODE_BYTES)
        found.extend(count for _, count in counts[bisect.bisect_left(positions, start) :
                                                   bisect.bisect_left(positions, stop)])  # fmt: skip
    return max(found, default=None)


# Size limits checked before converting ----------------------------------------------------------------

#: Members smaller than this are not held to the compression ratio (small XML parts compress very well).
_RATIO_FLOOR = 1024 * 1024
#: Paragraph and table cell elements of Office XML: w:p, a:p, w:tc, a:tc, and spreadsheet cells (c).
_OFFICE_ITEM = re.compile(rb"<(?:[A-Za-z][\w.-]{0,15}:)?(?:p|tc|c)[\s/>]")
#: Markup tags of HTML (each at most one paragraph, list item or table cell).
_HTML_TAG = re.compile(rb"<[A-Za-z]")
_READ_CHUNK = 1024 * 1024


def _too_large(message: str, **extra: int | float) -> LimitExceeded:
    return LimitExceeded(message, code="document_too_large", extra=extra)


def _check_limits(path: Path, fmt: DocumentFormat, limits: DocumentLimits) -> None:
    """Refuse a document whose conversion would not fit in memory, before docling reads it."""
    if fmt in OOXML_FORMATS.values():
        _check_package(path, limits)
    elif fmt is not DocumentFormat.PDF:  # PDFs are bounded by pages (max_pages, pdf_batch_pages)
        size = path.stat().st_size
        if size > limits.max_text_bytes:
            raise _too_large(
                f"The {fmt.value} document is {size} bytes; at most {limits.max_text_bytes} are accepted",
                size=size,
                max_text_bytes=limits.max_text_bytes,
            )
        items = _text_items(path.read_bytes(), fmt)
        _check_items(items, limits)


def _check_items(items: int, limits: DocumentLimits) -> None:
    if items > limits.max_items:
        raise _too_large(
            f"The document holds about {items} paragraphs and table cells; at most {limits.max_items} "
            "are accepted",
            items=items,
            max_items=limits.max_items,
        )


def _check_package(path: Path, limits: DocumentLimits) -> None:
    """An Office package's declared member sizes, count and compression ratios, then its paragraphs and
    cells (its XML parts read in chunks: the declared sizes bound the work)."""
    try:
        package = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return  # docling reports it as unreadable
    with package:
        members = package.infolist()
        if len(members) > limits.max_archive_members:
            raise _too_large(
                f"The package has {len(members)} parts; at most {limits.max_archive_members} are accepted",
                members=len(members),
                max_archive_members=limits.max_archive_members,
            )
        total = 0
        for member in members:
            size = member.file_size
            if size > limits.max_archive_member_bytes:
                raise _too_large(
                    f"A part of the package unpacks to {size} bytes; at most "
                    f"{limits.max_archive_member_bytes} are accepted",
                    member_bytes=size,
                    max_archive_member_bytes=limits.max_archive_member_bytes,
                )
            ratio = size / max(member.compress_size, 1)
            if size > _RATIO_FLOOR and ratio > limits.max_compression_ratio:
                raise _too_large(
                    f"A part of the package is compressed {ratio:.0f} to 1; at most "
                    f"{limits.max_compression_ratio:g} to 1 is accepted",
                    compression_ratio=round(ratio),
                    max_compression_ratio=limits.max_compression_ratio,
                )
            total += size
        if total > limits.max_archive_bytes:
            raise _too_large(
                f"The package unpacks to {total} bytes; at most {limits.max_archive_bytes} are accepted",
                archive_bytes=total,
                max_archive_bytes=limits.max_archive_bytes,
            )
        items = 0
        for member in members:
            if member.filename.endswith(".xml") and member.filename.startswith(tuple(OOXML_FORMATS)):
                try:
                    items += _count_in_stream(package, member, _OFFICE_ITEM)
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError):
                    return  # a damaged member: docling reports the document as unreadable
                _check_items(items, limits)


def _count_in_stream(package: zipfile.ZipFile, member: zipfile.ZipInfo, pattern: re.Pattern[bytes]) -> int:
    """Matches of ``pattern`` (at most 16 bytes long) in a member, decompressed a chunk at a time."""
    count = 0
    tail = b""
    with package.open(member) as stream:
        while chunk := stream.read(_READ_CHUNK):
            data = tail + chunk
            cut = max(0, len(data) - 16)  # matches starting later are counted with the next chunk
            count += sum(1 for match in pattern.finditer(data) if match.start() < cut)
            tail = data[cut:]
    return count + sum(1 for _ in pattern.finditer(tail))


def _text_items(data: bytes, fmt: DocumentFormat) -> int:
    """An upper bound of the paragraphs and table cells docling makes of a text document."""
    if fmt is DocumentFormat.HTML:
        return sum(1 for _ in _HTML_TAG.finditer(data))
    text = data.decode("utf-8-sig", "replace")
    if fmt is DocumentFormat.CSV:
        return _csv_cells(text)
    # Markdown: a line is at most one block, or a table row as wide as the widest row (the grid is dense).
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    widths = [
        line.count("|") + 1 - line.startswith("|") - line.endswith("|") for line in lines if "|" in line
    ]
    return len(lines) - len(widths) + len(widths) * max(widths, default=0)


#: The delimiters docling's CSV backend considers, and the sample it sniffs when the first line fails.
_CSV_DELIMITERS = ",;\t|:"
_CSV_SNIFF_SAMPLE = 4096


def _csv_cells(text: str) -> int:
    """Rows times columns of the table docling makes of a CSV (its table grid is dense)."""
    head = next((line for line in text.splitlines() if line.strip()), "")
    dialect: Any = csv.excel
    for sample in (head, text[:_CSV_SNIFF_SAMPLE]):
        with contextlib.suppress(csv.Error):
            dialect = csv.Sniffer().sniff(sample, _CSV_DELIMITERS)
            break
    rows = columns = 0
    for row in csv.reader(io.StringIO(text, newline=""), dialect=dialect, doublequote=True, strict=False):
        if row:
            rows += 1
            columns = max(columns, len(row))
    return rows * columns


def _join(documents: list[DoclingDocument]) -> DoclingDocument:
    """Concatenate page-range documents, keeping the original page numbers (concatenate renumbers from 1)."""
    if len(documents) == 1:
        return documents[0]
    from docling_core.types.doc.common.content_layer import ContentLayer  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from docling_core.types.doc.document import DoclingDocument  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from docling_core.types.doc.items.node import DocItem  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    original = [page for document in documents for page in sorted(document.pages)]
    joined = DoclingDocument.concatenate(documents)
    mapping = dict(zip(sorted(joined.pages), original, strict=True))
    joined.pages = {mapping[number]: page for number, page in joined.pages.items()}
    for number, page in joined.pages.items():
        page.page_no = number
    for item, _level in joined.iterate_items(
        traverse_pictures=True, included_content_layers=set(ContentLayer)
    ):
        if isinstance(item, DocItem):
            for prov in item.prov:
                prov.page_no = mapping[prov.page_no]
    return joined


def _chunk(document: DoclingDocument, max_tokens: int | None) -> list[Chunk]:
    from docling_core.transforms.chunker.doc_chunk import DocMeta  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from docling_core.transforms.chunker.hybrid_chunker import HybridChunker  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    tokenizer = approx_tokenizer(max_tokens or DEFAULT_CHUNK_MAX_TOKENS)
    chunks = []
    for chunk in HybridChunker(tokenizer=tokenizer).chunk(document):
        meta = chunk.meta
        assert isinstance(meta, DocMeta)  # the hybrid chunker yields DocChunks
        pages = sorted({prov.page_no for item in meta.doc_items for prov in item.prov})
        chunks.append(Chunk(text=chunk.text, headings=list(meta.headings or []), pages=pages))
    return chunks


_TOKEN = re.compile(r"\w+|[^\w\s]")


def approx_tokenizer(max_tokens: int) -> Any:
    """A chunker tokenizer of `max_tokens` counting words and punctuation (see `_approx_tokenizer_class`)."""
    return _approx_tokenizer_class()(max_tokens=max_tokens)


@functools.cache
def _approx_tokenizer_class() -> Any:
    """A docling-core tokenizer that counts words and punctuation marks; needs no model and no hub.

    BPE tokenizers count about 1.3 tokens per English word, so leave a margin when a chunk must fit an
    embedding model's window. (The default HybridChunker tokenizer downloads one from the hub: 52 s of
    retries offline.)
    """
    from docling_core.transforms.chunker.tokenizer.base import BaseTokenizer  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    class _ApproxTokenizer(BaseTokenizer):
        max_tokens: int

        def count_tokens(self, text: str) -> int:
            return len(_TOKEN.findall(text))

        def get_max_tokens(self) -> int:
            return self.max_tokens

        def get_tokenizer(self) -> Callable[[str], int]:
            return self.count_tokens  # semchunk accepts a token counter

    return _ApproxTokenizer


def _force_hub_offline() -> None:
    """No model lookup may wait on the Hugging Face hub: set HF_HUB_OFFLINE, also if the hub is imported.
    Also silence transformers' advice that torch is missing (normal here), which it prints to stderr."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import huggingface_hub.constants  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    huggingface_hub.constants.HF_HUB_OFFLINE = True  # in case it was imported before; read at download time


@contextlib.contextmanager
def _named_for(path: Path, fmt: DocumentFormat) -> Iterator[Path]:
    """``path``, or a symlink to it with ``fmt``'s suffix: docling guesses text formats from the name."""
    if path.suffix.lower() in SUFFIXES[fmt]:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="xenios-extract-") as directory:
        link = Path(directory) / f"document{SUFFIXES[fmt][0]}"
        link.symlink_to(path.resolve())
        yield link


class _Watchdog:
    """Raise `_DeadlineExceeded` in the entering thread once ``seconds`` have passed, and again every
    `_REFIRE_SECONDS` while the thread is still in the function that entered the block.

    Docling checks its own timeout only between PDF pages; this covers everything else (one huge page, an
    HTML or spreadsheet backend, exporting). It uses ``PyThreadState_SetAsyncExc`` like Dramatiq's time limit:
    the exception arrives at the next Python bytecode, so one long native call finishes first. It can also
    arrive inside code that swallows it (a weakref callback run by the garbage collector prints "Exception
    ignored" and carries on): hence the repeats. It can even arrive as ``__exit__`` starts, before the block
    is disarmed: so a repeat is sent only while the entering function's frame is still on the thread's
    stack, never into whatever the thread runs next (the next job).
    """

    def __init__(self, seconds: float) -> None:
        self._thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._armed = True
        self._fired = False
        self._frame: FrameType | None = None
        self._timer = self._schedule(seconds)

    def __enter__(self) -> None:
        self._frame = sys._getframe(1)
        self._timer.start()

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._armed = False
            self._timer.cancel()
            if self._fired:  # not delivered yet (or delivered and being handled): nothing may stay pending
                _set_async_exc(self._thread_id, None)
            self._frame = None

    def _schedule(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self._fire)
        timer.daemon = True
        return timer

    def _fire(self) -> None:
        with self._lock:
            if self._armed and self._still_inside():
                self._fired = True
                _set_async_exc(self._thread_id, _DeadlineExceeded)
                self._timer = self._schedule(_REFIRE_SECONDS)
                self._timer.start()
            else:
                self._armed = False
                self._frame = None

    def _still_inside(self) -> bool:
        frame = sys._current_frames().get(self._thread_id)
        while frame is not None:
            if frame is self._frame:
                return True
            frame = frame.f_back
        return False


_REFIRE_SECONDS = 1.0


def _set_async_exc(thread_id: int, exc_type: type[BaseException] | None) -> None:
    # None is passed as NULL, which clears a pending exception.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )
