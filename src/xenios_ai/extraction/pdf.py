"""PDF inspection before Docling converts anything: page count, password check, damage (pypdfium2), and
the page count a damaged file declares."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from pathlib import Path

from xenios_ai.errors import InvalidInput


@dataclass
class PdfInfo:
    page_count: int | None  # None when pypdfium2 cannot read the file
    damage: str | None = None
    declared_pages: int | None = None


def inspect_pdf(path: Path, password: str | None) -> PdfInfo:
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
        return PdfInfo(page_count=None, damage=str(exc), declared_pages=declared_page_count(path))
    try:
        return PdfInfo(page_count=len(pdf))
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


def declared_page_count(path: Path) -> int | None:
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
