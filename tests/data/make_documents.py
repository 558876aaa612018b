"""Generate the committed extraction fixtures under ``tests/data/documents/``.

Run ``uv run python tests/data/make_documents.py`` after changing this file and commit the outputs. Every
output is deterministic (fixed dates, fixed ZIP timestamps, seeded randomness), so a rerun that changes
nothing leaves ``git status`` clean.

PDFs are drawn with pypdfium2 (already a docling dependency): reportlab is not installed. The encrypted PDF
needs the ``qpdf`` command line tool (``apt-get install qpdf``); it is only needed to regenerate fixtures,
never at test time.

The known sentences and cells live in the constants below; the tests import them instead of repeating them.
"""

from __future__ import annotations

import csv
import ctypes
import datetime as dt
import io
import random
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import docx
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from openpyxl import Workbook  # type: ignore[import-untyped]
from PIL import Image
from pptx import Presentation

DOCUMENTS = Path(__file__).resolve().parent / "documents"

#: Password of ``encrypted.pdf`` (user password; the owner password is ``OWNER_PASSWORD``).
PDF_PASSWORD = "s3cret"
OWNER_PASSWORD = "owner-s3cret"

FIXED_TIME = dt.datetime(2024, 3, 12, 9, 30, 0)

# --- multipage.pdf: four pages, page 2 has two columns ------------------------------------------------
PDF_TITLE = "Xenios Coaching Report"
PDF_PAGE_SENTENCES = {
    1: [
        "Page one introduces the client Maria Lopez and her goal of running a marathon in October.",
        "The first session took place on 12 March 2024 in Lisbon.",
    ],
    3: ["Page three lists the weekly plan with three easy runs and one long run on Sunday."],
    4: ["Page four closes the report with the next review scheduled for 30 April 2024."],
}
PDF_COLUMNS_HEADING = "Two Column Notes"
PDF_LEFT_COLUMN = (
    "Left column: the client sleeps seven hours per night and wants to improve recovery before long runs. "
    "She keeps a short journal after every session."
)
PDF_RIGHT_COLUMN = (
    "Right column: nutrition focuses on protein at breakfast and steady hydration during training weeks. "
    "Coffee stays below three cups a day."
)
#: One word that only occurs on each page, to check page ranges and chunk page numbers.
PDF_PAGE_MARKERS = {1: "marathon", 2: "hydration", 3: "Sunday", 4: "review"}

# --- report.docx --------------------------------------------------------------------------------------
DOCX_TITLE = "Coaching Plan"
DOCX_INTRO = "This plan describes the goals and the schedule agreed with the client."
DOCX_GOALS_HEADING = "Goals"
DOCX_BULLETS = [
    "Run a half marathon by June",
    "Sleep eight hours on weekdays",
    "Cook dinner four times a week",
]
DOCX_SCHEDULE_HEADING = "Schedule"
DOCX_TABLE = [["Day", "Activity", "Minutes"], ["Monday", "Easy run", "30"], ["Thursday", "Intervals", "45"]]

# --- slides.pptx --------------------------------------------------------------------------------------
PPTX_SLIDES = [
    ("Welcome to Xenios", ["Coaching that fits your week", "Progress you can measure"]),
    ("Next Steps", ["Book the intake call", "Share your training log"]),
]

# --- workbook.xlsx ------------------------------------------------------------------------------------
XLSX_SHEETS: dict[str, list[list[str | int]]] = {
    "Clients": [["Name", "Goal", "Sessions"], ["Maria Lopez", "Marathon", 12], ["Tom Becker", "Strength", 8]],
    "Sessions": [
        ["Date", "Client", "Topic"],
        ["2024-03-12", "Maria Lopez", "Recovery"],
        ["2024-03-19", "Tom Becker", "Squats"],
    ],
}

# --- page.html ----------------------------------------------------------------------------------------
HTML_HEADING = "Client Onboarding"
HTML_PARAGRAPH = "Every new client completes a short questionnaire before the first call."
HTML_TABLE = [["Step", "Owner"], ["Questionnaire", "Client"], ["Intake call", "Coach"]]

# --- notes.md -----------------------------------------------------------------------------------------
MD_HEADING = "Session Notes"
MD_SUBHEADING = "Action Items"
MD_PARAGRAPH = "The client reported better sleep after reducing screen time in the evening."
MD_ITEMS = ["Walk after lunch", "Stretch for ten minutes"]

# --- sessions.csv -------------------------------------------------------------------------------------
CSV_ROWS = [
    ["date", "client", "minutes"],
    ["2024-03-12", "Maria Lopez", "60"],
    ["2024-03-19", "Tom Becker", "45"],
]


# --- PDF drawing with pypdfium2 -----------------------------------------------------------------------
PAGE_WIDTH, PAGE_HEIGHT = 612.0, 792.0
MARGIN = 72.0


class _PdfWriter:
    """Draw Helvetica text lines on pages with pdfium's page object API."""

    def __init__(self) -> None:
        self.pdf = pdfium.PdfDocument.new()

    def page(self, lines: list[tuple[float, float, float, str]]) -> None:
        """Add a page with ``(x, y, font_size, text)`` lines (PDF coordinates, origin bottom left)."""
        page = self.pdf.new_page(PAGE_WIDTH, PAGE_HEIGHT)
        for x, y, size, text in lines:
            obj = pdfium_c.FPDFPageObj_NewTextObj(self.pdf.raw, b"Helvetica", ctypes.c_float(size))
            buffer = ctypes.create_string_buffer((text + "\x00").encode("utf-16-le"))
            pdfium_c.FPDFText_SetText(obj, ctypes.cast(buffer, ctypes.POINTER(pdfium_c.FPDF_WCHAR)))
            pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, x, y)
            pdfium_c.FPDFPage_InsertObject(page.raw, obj)
        if not pdfium_c.FPDFPage_GenerateContent(page.raw):
            raise RuntimeError("pdfium could not generate the page content")
        page.close()

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        self.pdf.save(buffer)
        self.pdf.close()
        # pdfium stamps the current time and a time-based file ID; replace both by fixed values of the
        # same length so the xref offsets stay valid.
        data = re.sub(rb"\(D:\d{14}[^)]*\)", b"(D:20240312093000+00'00')", buffer.getvalue())
        data = re.sub(
            rb"/ID\[<[0-9A-F]{32}><[0-9A-F]{32}>\]", b"/ID[<" + b"0" * 32 + b"><" + b"0" * 32 + b">]", data
        )
        path.write_bytes(data)


def _paragraph(
    x: float, y: float, text: str, width_chars: int, size: float = 11.0
) -> list[tuple[float, float, float, str]]:
    return [(x, y - i * size * 1.4, size, line) for i, line in enumerate(textwrap.wrap(text, width_chars))]


def write_multipage_pdf(path: Path) -> None:
    writer = _PdfWriter()
    top = PAGE_HEIGHT - MARGIN
    for page_no in (1, 2, 3, 4):
        lines: list[tuple[float, float, float, str]] = [(MARGIN, top, 10.0, f"{PDF_TITLE} - page {page_no}")]
        y = top - 40
        if page_no == 2:
            lines.append((MARGIN, y, 16.0, PDF_COLUMNS_HEADING))
            y -= 30
            # Left column first, then the right one, as word processors write them.
            lines += _paragraph(MARGIN, y, PDF_LEFT_COLUMN, 38)
            lines += _paragraph(PAGE_WIDTH / 2 + 18, y, PDF_RIGHT_COLUMN, 38)
        else:
            if page_no == 1:
                lines.append((MARGIN, y, 18.0, PDF_TITLE))
                y -= 36
            for sentence in PDF_PAGE_SENTENCES[page_no]:
                para = _paragraph(MARGIN, y, sentence, 80)
                lines += para
                y -= 16 * len(para) + 10
        writer.page(lines)
    writer.save(path)


_WORDS = [
    *("client", "coach", "session", "goal", "progress", "sleep", "recovery", "nutrition", "training"),
    *("plan", "week", "review", "habit", "energy", "stress", "focus", "walk", "run", "strength"),
    *("mobility", "breakfast", "protein", "water", "journal", "feedback", "target", "balance"),
]


def write_long_pdf(path: Path, pages: int, seed: int = 7) -> None:
    """A report-like PDF of ``pages`` pages of ~45 lines each, for the benchmark and the memory check."""
    rng = random.Random(seed)
    writer = _PdfWriter()
    for page_no in range(1, pages + 1):
        lines: list[tuple[float, float, float, str]] = [
            (MARGIN, PAGE_HEIGHT - MARGIN, 14.0, f"Section {page_no}")
        ]
        y = PAGE_HEIGHT - MARGIN - 30
        while y > MARGIN:
            sentence = " ".join(rng.choice(_WORDS) for _ in range(14)).capitalize() + "."
            lines.append((MARGIN, y, 10.0, sentence))
            y -= 15
        writer.page(lines)
    writer.save(path)


def write_encrypted_pdf(source: Path, path: Path) -> None:
    """AES-128 encrypt ``source`` with qpdf; the static ID and IV keep the output deterministic."""
    qpdf = shutil.which("qpdf")
    if qpdf is None:
        raise SystemExit("qpdf is needed to regenerate encrypted.pdf: apt-get install qpdf")
    subprocess.run(
        [qpdf, "--static-id", "--static-aes-iv", "--encrypt", PDF_PASSWORD, OWNER_PASSWORD, "128",
         "--use-aes=y", "--", str(source), str(path)],
        check=True,
    )  # fmt: skip


def write_truncated_pdf(source: Path, path: Path) -> None:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_png_named_pdf(path: Path) -> None:
    """A real PNG image saved as ``.pdf``: what users upload when they rename a screenshot."""
    image = Image.new("RGB", (64, 32), (200, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    path.write_bytes(buffer.getvalue())


# --- Office documents ---------------------------------------------------------------------------------
def _normalize_zip(path: Path) -> None:
    """Rewrite an OOXML package with fixed timestamps and entry order so it is byte-for-byte reproducible."""
    with zipfile.ZipFile(path) as source:
        entries = [(info.filename, source.read(info)) for info in source.infolist()]
    # openpyxl stamps dcterms:modified with the current time whatever the properties say.
    stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    entries = [
        (
            name,
            re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp, data) if name == "docProps/core.xml" else data,
        )
        for name, data in entries
    ]
    # [Content_Types].xml stays first, as Office writes it.
    entries.sort(key=lambda entry: (entry[0] != "[Content_Types].xml", entry[0]))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, data)


def write_docx(path: Path) -> None:
    document = docx.Document()
    document.core_properties.created = FIXED_TIME
    document.core_properties.modified = FIXED_TIME
    document.core_properties.last_printed = FIXED_TIME
    document.add_heading(DOCX_TITLE, level=1)
    document.add_paragraph(DOCX_INTRO)
    document.add_heading(DOCX_GOALS_HEADING, level=2)
    for bullet in DOCX_BULLETS:
        document.add_paragraph(bullet, style="List Bullet")
    document.add_heading(DOCX_SCHEDULE_HEADING, level=2)
    table = document.add_table(rows=len(DOCX_TABLE), cols=len(DOCX_TABLE[0]))
    table.style = "Table Grid"
    for r, row in enumerate(DOCX_TABLE):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.save(str(path))
    _normalize_zip(path)


def write_pptx(path: Path) -> None:
    presentation = Presentation()
    presentation.core_properties.created = FIXED_TIME
    presentation.core_properties.modified = FIXED_TIME
    presentation.core_properties.last_printed = FIXED_TIME
    layout = presentation.slide_layouts[1]  # title and content
    for title, bullets in PPTX_SLIDES:
        slide = presentation.slides.add_slide(layout)
        slide.shapes.title.text = title
        body = slide.placeholders[1].text_frame
        body.text = bullets[0]
        for bullet in bullets[1:]:
            body.add_paragraph().text = bullet
    presentation.save(str(path))
    _normalize_zip(path)


def write_xlsx(path: Path) -> None:
    workbook = Workbook()
    workbook.remove(workbook.active)
    for name, rows in XLSX_SHEETS.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    workbook.properties.created = FIXED_TIME
    workbook.properties.modified = FIXED_TIME
    workbook.save(str(path))
    _normalize_zip(path)


# --- Packages made at test time (not committed) ------------------------------------------------------
def _copy_package(source: Path, target: zipfile.ZipFile, *, content_types_last: bool = False) -> None:
    with zipfile.ZipFile(source) as package:
        infos = package.infolist()
        if content_types_last:
            infos.sort(key=lambda info: info.filename == "[Content_Types].xml")
        for info in infos:
            target.writestr(info, package.read(info))


def package_with_zeros(source: Path, member: str, size: int) -> bytes:
    """The OOXML package ``source`` plus ``member``: ``size`` zero bytes, deflated to about size / 1000
    (a zip bomb that is small on disk)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        _copy_package(source, target)
        chunk = bytes(1024 * 1024)
        with target.open(member, "w", force_zip64=True) as stream:
            for start in range(0, size, len(chunk)):
                stream.write(chunk[: min(len(chunk), size - start)])
    return buffer.getvalue()


def package_with_content_types_last(source: Path) -> bytes:
    """``source`` re-zipped with ``[Content_Types].xml`` as its last member, as some writers store it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        _copy_package(source, target, content_types_last=True)
    return buffer.getvalue()


def workbook_with_cells(cells: int, columns: int = 10) -> bytes:
    """``workbook.xlsx`` whose first sheet holds ``cells`` numbers instead (its XML compresses ~40:1)."""
    rows = []
    for row in range(1, cells // columns + 1):
        values = "".join(f'<c r="{_column(col)}{row}"><v>{row}</v></c>' for col in range(columns))
        rows.append(f'<row r="{row}">{values}</row>')
    sheet = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f"<sheetData>{''.join(rows)}</sheetData></worksheet>"
    ).encode()
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(DOCUMENTS / "workbook.xlsx") as package,
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in package.infolist():
            data = sheet if info.filename == "xl/worksheets/sheet1.xml" else package.read(info)
            target.writestr(info.filename, data)
    return buffer.getvalue()


def _column(index: int) -> str:
    """Spreadsheet column name of a 0-based index (A, B, ..., Z, AA, ...)."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


# --- Text formats -------------------------------------------------------------------------------------
def write_html(path: Path) -> None:
    head, *body = HTML_TABLE
    rows = "\n".join("    <tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in body)
    path.write_text(
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Onboarding</title></head>\n'
        f"<body>\n  <h1>{HTML_HEADING}</h1>\n  <p>{HTML_PARAGRAPH}</p>\n  <table>\n"
        "    <tr>" + "".join(f"<th>{cell}</th>" for cell in head) + "</tr>\n"
        f"{rows}\n  </table>\n</body>\n</html>\n",
        encoding="utf-8",
    )


def write_markdown(path: Path) -> None:
    items = "\n".join(f"- {item}" for item in MD_ITEMS)
    path.write_text(
        f"# {MD_HEADING}\n\n{MD_PARAGRAPH}\n\n## {MD_SUBHEADING}\n\n{items}\n\n"
        "| Metric | Value |\n|---|---|\n| Sleep | 7.5 h |\n",
        encoding="utf-8",
    )


def write_csv(path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(CSV_ROWS)


def main() -> None:
    DOCUMENTS.mkdir(parents=True, exist_ok=True)
    multipage = DOCUMENTS / "multipage.pdf"
    write_multipage_pdf(multipage)
    write_encrypted_pdf(multipage, DOCUMENTS / "encrypted.pdf")
    write_truncated_pdf(multipage, DOCUMENTS / "truncated.pdf")
    write_png_named_pdf(DOCUMENTS / "image_renamed.pdf")
    write_docx(DOCUMENTS / "report.docx")
    write_pptx(DOCUMENTS / "slides.pptx")
    write_xlsx(DOCUMENTS / "workbook.xlsx")
    write_html(DOCUMENTS / "page.html")
    write_markdown(DOCUMENTS / "notes.md")
    write_csv(DOCUMENTS / "sessions.csv")
    total = sum(p.stat().st_size for p in DOCUMENTS.iterdir())
    print(f"wrote {len(list(DOCUMENTS.iterdir()))} fixtures, {total} bytes, to {DOCUMENTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
