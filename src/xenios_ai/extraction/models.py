"""What an extraction takes (`ExtractionOptions`) and gives (`ExtractionResult`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from xenios_ai.extraction.sniff import DocumentFormat

if TYPE_CHECKING:
    from xenios_ai.settings import Settings

OutputFormat = Literal["markdown", "json", "text"]
Pipeline = Literal["native", "layout"]
ProgressCallback = Callable[[float, str], None]

#: Chunk size when `ExtractionOptions.chunk_max_tokens` is not set.
DEFAULT_CHUNK_MAX_TOKENS = 512


class ExtractionOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What to extract. Decoded from the job request, so invalid values fail as msgspec validation errors."""

    output_formats: tuple[OutputFormat, ...] = ("markdown", "json")
    chunking: bool = True
    #: Approximate tokens per chunk (words and punctuation marks; see `_ApproxTokenizer`). None: 512.
    chunk_max_tokens: Annotated[int, msgspec.Meta(ge=16, le=8192)] | None = None
    #: First and last page, 1-based and inclusive. Pages past the end are ignored.
    page_range: tuple[Annotated[int, msgspec.Meta(ge=1)], Annotated[int, msgspec.Meta(ge=1)]] | None = None
    #: Password of an encrypted PDF.
    password: str | None = None
    #: PDF pipeline of this job: "native" (model-free) or "layout" (headings and tables; needs the layout
    #: models on the worker, else the job fails ``layout_models_unavailable``). None: DOCLING_PIPELINE.
    pipeline: Pipeline | None = None

    def __post_init__(self) -> None:
        if self.page_range is not None and self.page_range[0] > self.page_range[1]:
            raise ValueError("page_range must be (first, last) with first <= last")
        if len(set(self.output_formats)) != len(self.output_formats):
            raise ValueError("output_formats has duplicates")

    def __repr__(self) -> str:
        mask = "***"
        shown = msgspec.structs.replace(self, password=mask) if self.password is not None else self
        return msgspec.Struct.__repr__(shown)


class DocumentLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What a document may hold, checked before converting; past a limit it fails with document_too_large.

    Docling keeps a whole document in memory: measured here, a 50,000-cell CSV took 300 MB more (with
    markdown, JSON and chunks) and a 20,000-paragraph Markdown file 170 MB; python-pptx reads every member
    of a package into memory. Without these a 2 MB CSV or a small zip bomb gets the worker process killed
    for memory. The defaults are the
    settings' (EXTRACTION_MAX_ARCHIVE_*, EXTRACTION_MAX_TEXT_BYTES, EXTRACTION_MAX_ITEMS).
    """

    #: DOCX, PPTX, XLSX: total uncompressed size of the package's members, as the ZIP directory declares
    #: them (``zipfile`` never returns more bytes than declared).
    max_archive_bytes: int = 256 * 1024 * 1024
    #: ... of one member.
    max_archive_member_bytes: int = 64 * 1024 * 1024
    #: ... number of members.
    max_archive_members: int = 10_000
    #: ... uncompressed / compressed size of a member over 1 MiB (XML compresses ~10:1, zeros ~1000:1).
    max_compression_ratio: float = 100.0
    #: HTML, Markdown, CSV: file size.
    max_text_bytes: int = 4 * 1024 * 1024
    #: Paragraphs, list items and table cells, counted in the source (CSV: rows x columns; Markdown: lines
    #: and table cells; HTML: tags; Office: paragraph and cell elements).
    max_items: int = 50_000

    @classmethod
    def from_settings(cls, settings: Settings) -> DocumentLimits:
        return cls(
            max_archive_bytes=settings.extraction_max_archive_bytes,
            max_archive_member_bytes=settings.extraction_max_archive_member_bytes,
            max_archive_members=settings.extraction_max_archive_members,
            max_compression_ratio=settings.extraction_max_compression_ratio,
            max_text_bytes=settings.extraction_max_text_bytes,
            max_items=settings.extraction_max_items,
        )


class PageStatus(msgspec.Struct, frozen=True):
    page: int
    status: Literal["ok", "failed"]
    error: str | None = None


class Chunk(msgspec.Struct, frozen=True):
    text: str
    #: Section headings from the outermost to the innermost one (empty for PDFs in native mode).
    headings: list[str]
    pages: list[int]


class Timings(msgspec.Struct):
    """Seconds spent in each step."""

    convert: float
    export: float
    chunking: float
    total: float


class ExtractionResult(msgspec.Struct, kw_only=True):
    format: DocumentFormat
    status: Literal["success", "partial_success"]
    pipeline: Pipeline
    #: Pages (PDF), slides (PPTX) or sheets (XLSX) in the document; 0 for formats without pages.
    page_count: int
    #: One entry per page of the requested range, for formats with pages.
    pages: list[PageStatus]
    failed_pages: list[int]
    markdown: str | None = None
    text: str | None = None
    #: The Docling JSON document (``DoclingDocument.export_to_dict()``).
    document: dict[str, Any] | None = None
    chunks: list[Chunk] = []
    #: Things the caller should know that did not fail the extraction, e.g. a damaged PDF.
    warnings: list[str] = []
    timings: Timings
