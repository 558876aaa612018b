"""The `Extractor`: Docling conversion with limits, per-page progress, exports and chunks (workers only).

Docling, docling-core and pypdfium2 are imported inside the functions that use them, so importing this
module stays cheap; building an `Extractor` imports them (seconds). Its parts: `limits` (checked before
converting), `pdf` (inspection), `chunking` (join, chunks), `watchdog` (the deadline), `docling_options`
(the converter's format options).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from xenios_ai.errors import InvalidInput, LimitExceeded, UnsupportedMediaType
from xenios_ai.extraction.chunking import approx_tokenizer_class, chunk, force_hub_offline, join_pages
from xenios_ai.extraction.docling_options import (
    DOCLING_FORMATS,
    layout_errors,
    office_format_options,
    pdf_format_option,
)
from xenios_ai.extraction.limits import check_limits
from xenios_ai.extraction.models import (
    DocumentLimits,
    ExtractionOptions,
    ExtractionResult,
    PageStatus,
    Pipeline,
    ProgressCallback,
    Timings,
)
from xenios_ai.extraction.pdf import PdfInfo, inspect_pdf
from xenios_ai.extraction.progress import PAGES_SHARE, Abort, ProgressRelay, Run
from xenios_ai.extraction.sniff import OOXML_FORMATS, SUFFIXES, DocumentFormat, sniff_document_file
from xenios_ai.extraction.watchdog import DeadlineExceeded, Watchdog

if TYPE_CHECKING:
    from docling.datamodel.document import ConversionResult
    from docling.document_converter import DocumentConverter
    from docling_core.types.doc.document import DoclingDocument


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
        force_hub_offline()

        from docling.datamodel.base_models import InputFormat  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
        from docling.document_converter import DocumentConverter  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

        self._converter: DocumentConverter = DocumentConverter(
            allowed_formats=[InputFormat(value) for value in DOCLING_FORMATS.values()],
            format_options={
                InputFormat.PDF: pdf_format_option(
                    pipeline,
                    pdf_threads=pdf_threads,
                    document_timeout=document_timeout,
                    artifacts_path=self.artifacts_path,
                    password=None,
                ),
                **office_format_options(self.limits),
            },
        )
        with layout_errors(self.pipeline):
            self._converter.initialize_pipeline(InputFormat.PDF)
        # Import now what the first extraction would otherwise import on its clock (about 1 s).
        for module in ("docling_core.transforms.chunker.hybrid_chunker", "pypdfium2"):
            importlib.import_module(module)
        approx_tokenizer_class()

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
        run = Run(fmt=fmt, options=options, progress=progress, started=time.monotonic())
        try:
            with Watchdog(self.document_timeout), _named_for(path, fmt) as source:
                result = self._extract(source, run)
        except DeadlineExceeded:
            raise self._timeout_error() from None
        return result

    # The steps of one extraction ---------------------------------------------------------------------

    def _extract(self, source: Path, run: Run) -> ExtractionResult:
        run.report(0.0, "converting")
        binary = run.fmt in (DocumentFormat.PDF, *OOXML_FORMATS.values())
        if binary and sniff_document_file(source) is not run.fmt:
            raise UnsupportedMediaType(
                f"The file is not a {run.fmt.value} document", code="unsupported_format"
            )
        check_limits(source, run.fmt, self.limits)
        if run.fmt is DocumentFormat.PDF:
            document, pages, page_count = self._convert_pdf(source, run)
        else:
            document, pages, page_count = self._convert_other(source, run)
        run.timings["convert"] = time.monotonic() - run.started

        failed = [page.page for page in pages if page.status == "failed"]
        if len(failed) == len(pages) and (pages or run.fmt is DocumentFormat.PDF):
            raise InvalidInput("No page of the document could be read", code="unreadable_document")

        run.report(PAGES_SHARE, "exporting")
        started = time.monotonic()
        wanted = set(run.options.output_formats)
        markdown = document.export_to_markdown() if "markdown" in wanted else None
        text = document.export_to_text() if "text" in wanted else None
        as_json = document.export_to_dict() if "json" in wanted else None
        run.timings["export"] = time.monotonic() - started

        started = time.monotonic()
        chunks = chunk(document, run.options.chunk_max_tokens) if run.options.chunking else []
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

    def _convert_pdf(self, source: Path, run: Run) -> tuple[DoclingDocument, list[PageStatus], int]:
        """Convert a PDF in page ranges of ``pdf_batch_pages`` pages (memory), then join the ranges."""
        password = run.options.password or None
        info = inspect_pdf(source, password)
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
        return join_pages(documents), pages, page_count

    def _convert_other(self, source: Path, run: Run) -> tuple[DoclingDocument, list[PageStatus], int]:
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
        self, converter: DocumentConverter, source: Path, run: Run, page_range: tuple[int, int]
    ) -> ConversionResult:
        """One docling conversion, its status mapped onto the error tree."""
        from docling.datamodel.base_models import ConversionStatus, FailureCategory  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

        relay = ProgressRelay(run, deadline=run.started + self.document_timeout)
        aborted: BaseException | None = None
        try:
            with layout_errors(self.pipeline):
                conv_res = converter.convert(
                    source,
                    raises_on_error=False,
                    max_num_pages=self.max_pages,
                    page_range=page_range,
                    progress_callback=relay,
                )
        except Abort as abort:
            aborted = abort.error
        if aborted is not None:
            raise aborted  # outside the except block, so the caller's exception keeps its own context
        run.completed_pages += relay.pages_in_call

        if any(error.category == FailureCategory.TIMEOUT for error in conv_res.errors):
            raise self._timeout_error()
        expected = DOCLING_FORMATS[run.fmt]
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

    def _account_for_damage(self, info: PdfInfo, pages: list[PageStatus], run: Run) -> int:
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

    # Docling configuration (`docling_options`) ------------------------------------------------------

    def _converter_with_password(self, password: str) -> DocumentConverter:
        """A converter whose PDF backend gets ``password``; it shares the pipelines already built."""
        from docling.datamodel.base_models import InputFormat  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
        from docling.document_converter import DocumentConverter  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

        converter = DocumentConverter(
            allowed_formats=[InputFormat.PDF],
            format_options={
                InputFormat.PDF: pdf_format_option(
                    self.pipeline,
                    pdf_threads=self.pdf_threads,
                    document_timeout=self.document_timeout,
                    artifacts_path=self.artifacts_path,
                    password=password,
                )
            },
        )
        converter.initialized_pipelines = self._converter.initialized_pipelines
        return converter

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
