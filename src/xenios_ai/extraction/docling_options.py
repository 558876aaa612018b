"""How the `Extractor` configures Docling: the formats it converts, the PDF pipeline's options (native or
layout), the Office formats' archive limits, and what a layout mode without its models raises.

Docling is imported inside the functions (a worker's `Extractor` calls them at build time), so importing
this module stays cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from xenios_ai.errors import XeniosError
from xenios_ai.extraction.models import DocumentLimits, Pipeline
from xenios_ai.extraction.sniff import DocumentFormat

if TYPE_CHECKING:
    from docling.document_converter import FormatOption

__all__ = ["DOCLING_FORMATS", "LAYOUT_HINT", "layout_errors", "office_format_options", "pdf_format_option"]

LAYOUT_HINT = (
    "Layout mode needs torch (CPU) and the docling layout models. Install them with "
    "`uv pip install 'docling-slim[models-local]==2.142.1' "
    "--extra-index-url https://download.pytorch.org/whl/cpu`, "
    "download the models with `docling-tools models download layout tableformer -o $DOCLING_ARTIFACTS_PATH` "
    "and start the worker with DOCLING_ARTIFACTS_PATH set to that folder; or use the native pipeline."
)
DOCLING_FORMATS = {
    DocumentFormat.PDF: "pdf",
    DocumentFormat.DOCX: "docx",
    DocumentFormat.PPTX: "pptx",
    DocumentFormat.XLSX: "xlsx",
    DocumentFormat.HTML: "html",
    DocumentFormat.MARKDOWN: "md",
    DocumentFormat.CSV: "csv",
}


def pdf_format_option(
    pipeline: Pipeline,
    *,
    pdf_threads: int,
    document_timeout: float,
    artifacts_path: str | None,
    password: str | None,
) -> FormatOption:
    """The PDF pipeline's options: "native" (model-free, nothing rendered) or "layout" (layout and table
    models from ``artifacts_path``); ``password`` goes to the PDF backend."""
    from docling.datamodel.backend_options import ThreadedDoclingParseBackendOptions  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions, PdfPipelineOptions  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from docling.document_converter import NativePdfFormatOption, PdfFormatOption  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from pydantic import SecretStr  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    secret = SecretStr(password) if password is not None else None
    if pipeline == "native":
        native = NativePdfPipelineOptions(
            parser_threads=pdf_threads,
            generate_page_images=False,
            generate_picture_images=False,
            document_timeout=document_timeout,
        )
        backend = ThreadedDoclingParseBackendOptions.model_validate(
            {
                "parser_threads": pdf_threads,
                "render_pages": False,
                "include_bitmap_images": False,
                # Pages decoded ahead of the pipeline: each one costs memory, one thread uses few.
                "max_concurrent_results": 2 * pdf_threads,
                "password": secret,
            }
        )
        return NativePdfFormatOption(pipeline_options=native, backend_options=backend)
    layout = PdfPipelineOptions(
        artifacts_path=artifacts_path,
        do_ocr=False,  # OCR needs yet another model; scanned PDFs are out of scope for now
        do_table_structure=True,
        document_timeout=document_timeout,
    )
    backend = ThreadedDoclingParseBackendOptions.model_validate(
        {"parser_threads": pdf_threads, "password": secret}
    )
    return PdfFormatOption(pipeline_options=layout, backend_options=backend)


def office_format_options(limits: DocumentLimits) -> dict[Any, FormatOption]:
    """Word and Excel options with the package limits (docling's own defaults allow 512 MB)."""
    from docling.datamodel.backend_options import MsExcelBackendOptions, MsWordBackendOptions  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from docling.datamodel.base_models import InputFormat  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from docling.document_converter import ExcelFormatOption, WordFormatOption  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    archive = {
        "max_total_bytes": limits.max_archive_bytes,
        "max_file_bytes": limits.max_archive_member_bytes,
        "max_member_count": limits.max_archive_members,
    }
    return {
        InputFormat.DOCX: WordFormatOption(backend_options=MsWordBackendOptions.model_validate(archive)),
        InputFormat.XLSX: ExcelFormatOption(backend_options=MsExcelBackendOptions.model_validate(archive)),
    }


@contextlib.contextmanager
def layout_errors(pipeline: Pipeline) -> Iterator[None]:
    """In layout mode, missing torch or model files become ``layout_models_unavailable``."""
    if pipeline != "layout":
        yield
        return
    from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    try:
        yield
    except (ImportError, FileNotFoundError, LocalEntryNotFoundError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "artifacts_path" not in str(exc):
            raise
        raise XeniosError(f"{exc}. {LAYOUT_HINT}", code="layout_models_unavailable") from exc
