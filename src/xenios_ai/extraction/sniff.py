"""Tell a document's format from its bytes. No docling here: the API process sniffs uploads with it."""

from __future__ import annotations

import codecs
import csv
import os
import re
import struct
import zipfile
from enum import StrEnum
from pathlib import Path


class DocumentFormat(StrEnum):
    PDF = "pdf"
    DOCX = "docx"
    PPTX = "pptx"
    XLSX = "xlsx"
    HTML = "html"
    MARKDOWN = "markdown"
    CSV = "csv"


#: How many leading bytes `sniff_document_format` wants; `sniff_document_file` reads this many.
SNIFF_BYTES = 8192

_ZIP_MAGIC = b"PK\x03\x04"
OOXML_FORMATS = {"word/": DocumentFormat.DOCX, "ppt/": DocumentFormat.PPTX, "xl/": DocumentFormat.XLSX}
#: Parts every OOXML package may hold, whatever its kind.
_PACKAGE_PARTS = ("_rels/", "docProps/")
_OOXML_SUFFIXES = {".docx": DocumentFormat.DOCX, ".pptx": DocumentFormat.PPTX, ".xlsx": DocumentFormat.XLSX}
SUFFIXES = {
    DocumentFormat.PDF: (".pdf",),
    DocumentFormat.DOCX: (".docx",),
    DocumentFormat.PPTX: (".pptx",),
    DocumentFormat.XLSX: (".xlsx",),
    DocumentFormat.HTML: (".html", ".htm", ".xhtml"),
    DocumentFormat.MARKDOWN: (".md", ".markdown"),
    DocumentFormat.CSV: (".csv",),
}
#: Markup at the start of a text. Every repetition is atomic or possessive, so the match is linear: each
#: comment ends at its first ``-->`` and is never re-split when the tag after the comments does not match (a
#: plain ``(?:<!--.*?-->\s*)*`` tried exponentially many splits of ``<!---->`` * 40 + ``x``).
_HTML_START = re.compile(
    r"\A\s*+(?:<\?xml[^>]*\?>\s*+)?+(?:(?><!--.*?-->)\s*+)*+"
    r"<(?:!doctype\s+html|html|head|body|meta|title|h[1-6]|p|div|table|section|article|main)\b",
    re.IGNORECASE | re.DOTALL,
)


def sniff_document_format(head: bytes, filename: str | None = None) -> DocumentFormat | None:
    """Tell the format of a document from its first bytes (`SNIFF_BYTES` of them is enough), or None.

    Binary formats are decided by their bytes: PDF by its ``%PDF-`` header (see `_is_pdf`), OOXML by the
    ZIP members whose local headers lie in ``head``: a ``word/``, ``ppt/`` or ``xl/`` part names the kind;
    package-only parts (``[Content_Types].xml``, ``_rels/``, ``docProps/``) leave it to the extension, as
    do writers that put ``[Content_Types].xml`` last (the worker checks the whole member list with
    `sniff_document_file`). UTF-8 text is HTML when it starts with markup, CSV when every line splits
    into the same number (>= 2) of fields, and Markdown otherwise (plain text converts as Markdown). The
    filename otherwise only breaks ties: ``.csv`` and ``.md`` text is taken at its word. Anything else
    (images, legacy Office, archives, binary data) is None.
    """
    suffix = Path(filename).suffix.lower() if filename else ""
    if _is_pdf(head):
        return DocumentFormat.PDF
    if head.startswith(_ZIP_MAGIC):
        return _ooxml_format_in_prefix(_zip_names_in_prefix(head), suffix)
    text = _decode_text(head)
    if text is None or not text.strip():
        return None
    if suffix in SUFFIXES[DocumentFormat.CSV]:
        return DocumentFormat.CSV
    if suffix in SUFFIXES[DocumentFormat.MARKDOWN]:
        return DocumentFormat.MARKDOWN
    if _HTML_START.match(text) or (suffix in SUFFIXES[DocumentFormat.HTML] and "<" in text):
        return DocumentFormat.HTML
    if _looks_like_csv(text, complete=len(head) < SNIFF_BYTES):
        return DocumentFormat.CSV
    return DocumentFormat.MARKDOWN


def sniff_document_file(path: str | os.PathLike[str], filename: str | None = None) -> DocumentFormat | None:
    """`sniff_document_format` for a file; ZIP packages are judged by their whole member list.

    ``filename`` is the name the user gave the upload (it defaults to the file's own name).
    """
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as package:
                return _ooxml_format(package.namelist())
        except (zipfile.BadZipFile, OSError):
            return None
    return sniff_document_format(head, filename or path.name)


def _zip_names_in_prefix(head: bytes) -> list[str]:
    """Member names of the ZIP local file headers that start inside ``head``."""
    names: list[str] = []
    position = head.find(_ZIP_MAGIC)
    while position != -1 and position + 30 <= len(head):
        (name_length,) = struct.unpack_from("<H", head, position + 26)
        names.append(head[position + 30 : position + 30 + name_length].decode("utf-8", "replace"))
        position = head.find(_ZIP_MAGIC, position + 30 + name_length)
    return names


def _is_pdf(head: bytes) -> bool:
    """``%PDF-`` at the start (after whitespace), or later in the first KiB after bytes that are not text.

    pdfium finds the header anywhere in the first 1024 bytes, so a PDF may carry a little binary junk in
    front of it (a MacBinary header, say); but a text document that merely mentions ``%PDF-`` near its
    start (Markdown about PDFs) is text, not a PDF.
    """
    position = head.find(b"%PDF-", 0, 1024)
    if position == -1:
        return False
    return not head[:position].strip(b" \t\r\n\f\x00") or _decode_text(head) is None


def _ooxml_format_in_prefix(names: list[str], suffix: str) -> DocumentFormat | None:
    """The OOXML kind the members seen in a file's first bytes show (the extension's when they show
    several), else the extension's if they are package parts; None for other ZIP files."""
    shown = [fmt for name in names for directory, fmt in OOXML_FORMATS.items() if name.startswith(directory)]
    if shown:
        named = _OOXML_SUFFIXES.get(suffix)
        return named if named in shown else shown[0]
    if any(name == "[Content_Types].xml" or name.startswith(_PACKAGE_PARTS) for name in names):
        return _OOXML_SUFFIXES.get(suffix)
    return None


def _ooxml_format(names: list[str]) -> DocumentFormat | None:
    if "[Content_Types].xml" not in names:
        return None
    for name in names:
        for directory, fmt in OOXML_FORMATS.items():
            if name.startswith(directory):
                return fmt
    return None


def _decode_text(head: bytes) -> str | None:
    """UTF-8 text (a cut multi-byte character at the end is fine), or None for binary data."""
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    controls = sum(1 for char in text if ord(char) < 32 and char not in "\t\n\r\f")
    if "\x00" in text or controls > len(text) // 100:
        return None
    return text


def _looks_like_csv(text: str, *, complete: bool) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    if not complete and len(lines) > 2:
        lines = lines[:-1]  # the last line may be cut off
    if len(lines) < 2:
        return False
    for delimiter in (",", ";", "\t"):
        widths = {len(row) for row in csv.reader(lines[:50], delimiter=delimiter)}
        if len(widths) == 1 and widths.pop() >= 2:
            return True
    return False
