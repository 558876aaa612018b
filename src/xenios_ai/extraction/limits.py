"""Document limits checked before converting (`DocumentLimits`): unpacked size, parts and compression of
Office packages, text size and item counts of HTML, Markdown and CSV."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

from xenios_ai.errors import LimitExceeded
from xenios_ai.extraction.models import DocumentLimits
from xenios_ai.extraction.sniff import OOXML_FORMATS, DocumentFormat

_RATIO_FLOOR = 1024 * 1024
#: Paragraph and table cell elements of Office XML: w:p, a:p, w:tc, a:tc, and spreadsheet cells (c).
_OFFICE_ITEM = re.compile(rb"<(?:[A-Za-z][\w.-]{0,15}:)?(?:p|tc|c)[\s/>]")
#: Markup tags of HTML (each at most one paragraph, list item or table cell).
_HTML_TAG = re.compile(rb"<[A-Za-z]")
_READ_CHUNK = 1024 * 1024


def _too_large(message: str, **extra: int | float) -> LimitExceeded:
    return LimitExceeded(message, code="document_too_large", extra=extra)


def check_limits(path: Path, fmt: DocumentFormat, limits: DocumentLimits) -> None:
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
