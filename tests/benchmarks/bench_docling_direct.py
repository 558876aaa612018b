"""Docling without the job system: PDF pages/s, docs/s over the fixtures, and peak RSS on a long PDF.

Run from the repository root::

    uv run python -m tests.benchmarks.bench_docling_direct [--pages 50] [--rounds 5] [--memory-pages 200]

or as part of ``just bench`` (``just bench docling_direct``), which stores the figures in bench-results/.

It prints a table, then one JSON object (the last line) for the record. "docling" rows call
``DocumentConverter.convert`` directly; "extractor" rows go through `xenios_ai.extraction.Extractor`, with
its PDF check, per-page progress, deadline and exports. Peak RSS is measured in a fresh process per case.
Docling is imported lazily: the job benchmark imports `make_pdf` and should not pay for it.

The process's garbage collector is set up as a worker's (`xenios_ai.gc_tuning.settle` once docling is
loaded), after one comparison of docling's work on the PDF under CPython's default collector settings and
under the worker's, taking turns.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.benchmarks.common import ROOT, timed_rounds
from tests.data.make_documents import DOCUMENTS, write_long_pdf
from tests.support.processes import status_kb
from xenios_ai.extraction import DocumentFormat, ExtractionOptions, Extractor
from xenios_ai.extraction.chunking import approx_tokenizer
from xenios_ai.gc_tuning import settle

#: The fixtures of the mixed set, with their formats (the failure fixtures are left out).
MIXED = {
    "multipage.pdf": DocumentFormat.PDF,
    "report.docx": DocumentFormat.DOCX,
    "slides.pptx": DocumentFormat.PPTX,
    "workbook.xlsx": DocumentFormat.XLSX,
    "page.html": DocumentFormat.HTML,
    "notes.md": DocumentFormat.MARKDOWN,
    "sessions.csv": DocumentFormat.CSV,
}


def make_pdf(path: Path, pages: int) -> Path:
    """Write a report-like PDF of ``pages`` pages (~45 text lines each) to ``path``; deterministic."""
    write_long_pdf(path, pages)
    return path


def docling_work(converter: Any, path: Path) -> None:
    """What an extraction job does with the default options, in docling's own calls: convert, export
    markdown and the Docling JSON document, chunk with the same offline tokenizer."""
    from docling_core.transforms.chunker.hybrid_chunker import HybridChunker  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    document = converter.convert(path).document
    document.export_to_markdown()
    document.export_to_dict()
    list(HybridChunker(tokenizer=approx_tokenizer(512)).chunk(document))


def bench_gc(pdf: Path, pages: int, rounds: int) -> list[dict[str, Any]]:
    """`docling_work` on ``pdf`` under CPython's default collector settings vs `settle`'s, taking turns
    (median of ``rounds``); the process is left settled."""
    converter = docling_converter()
    docling_work(converter, pdf)  # warm-up
    default_threshold = (700, 10, 10)
    times: dict[str, list[float]] = {"default": [], "settled": []}
    for _ in range(rounds):
        gc.unfreeze()
        gc.set_threshold(*default_threshold)
        gc.collect()
        started = time.perf_counter()
        docling_work(converter, pdf)
        times["default"].append(time.perf_counter() - started)
        settle()
        started = time.perf_counter()
        docling_work(converter, pdf)
        times["settled"].append(time.perf_counter() - started)
    return [
        {
            "case": f"docling work, {name} GC ({pages} pages)",
            "seconds": seconds,
            "pages_per_s": pages / seconds,
        }
        for name, seconds in ((name, statistics.median(values)) for name, values in times.items())
    ]


def _median_seconds(cases: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    return {name: timed["median"] for name, timed in timed_rounds(cases, rounds).items()}


def docling_converter() -> Any:
    """A converter configured as the Extractor's native default: one parser thread, no images."""
    from docling.datamodel.base_models import InputFormat  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from docling.document_converter import DocumentConverter, NativePdfFormatOption  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    options = NativePdfPipelineOptions(
        parser_threads=1, generate_page_images=False, generate_picture_images=False
    )
    return DocumentConverter(
        format_options={InputFormat.PDF: NativePdfFormatOption(pipeline_options=options)}
    )


def bench_pdf(pdf: Path, pages: int, rounds: int, extractor: Extractor) -> list[dict[str, Any]]:
    converter = docling_converter()
    events: list[object] = []
    cases: dict[str, Callable[[], object]] = {
        "docling, whole document": lambda: converter.convert(pdf),
        "docling, whole document + page progress": lambda: converter.convert(
            pdf, progress_callback=events.append
        ),
        "extractor, convert only": lambda: extractor.extract(
            pdf,
            DocumentFormat.PDF,
            ExtractionOptions(output_formats=(), chunking=False),
            progress=lambda *_: None,
        ),
        "extractor, markdown + json + chunks": lambda: extractor.extract(
            pdf, DocumentFormat.PDF, progress=lambda *_: None
        ),
    }
    return [
        {"case": f"{name} ({pages} pages)", "seconds": seconds, "pages_per_s": pages / seconds}
        for name, seconds in _median_seconds(cases, rounds).items()
    ]


def bench_mixed(rounds: int, extractor: Extractor) -> list[dict[str, Any]]:
    converter = docling_converter()
    paths = [(DOCUMENTS / name, fmt) for name, fmt in MIXED.items()]

    def docling_all() -> None:
        for path, _ in paths:
            converter.convert(path)

    def extractor_all() -> None:
        for path, fmt in paths:
            extractor.extract(path, fmt)

    cases = {"docling, mixed fixtures": docling_all, "extractor, mixed fixtures": extractor_all}
    return [
        {"case": f"{name} ({len(paths)} docs)", "seconds": seconds, "docs_per_s": len(paths) / seconds}
        for name, seconds in _median_seconds(cases, rounds).items()
    ]


def measure_memory(pdf: Path, batch_pages: int) -> dict[str, Any]:
    """Peak RSS of a fresh worker-like process that builds an Extractor and extracts ``pdf``."""
    output = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.bench_docling_direct", "--child-memory", str(pdf),
         "--batch-pages", str(batch_pages)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout  # fmt: skip
    return dict(json.loads(output.strip().splitlines()[-1]))


def _child_memory(pdf: Path, batch_pages: int) -> None:
    def peak_mb() -> float:
        # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent across execve.
        return status_kb(os.getpid(), "VmHWM") / 1024

    extractor = Extractor(pdf_batch_pages=batch_pages)
    settle()  # as the worker does once its extractor is built
    after_build = peak_mb()
    started = time.perf_counter()
    result = extractor.extract(pdf, DocumentFormat.PDF)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "case": f"peak RSS, {result.page_count} pages, batches of {batch_pages} pages",
                "peak_rss_mb": round(peak_mb()),
                "rss_after_build_mb": round(after_build),
                "seconds": seconds,
                "pages_per_s": result.page_count / seconds,
                "chunks": len(result.chunks),
            }
        )
    )


def measure(pages: int = 50, rounds: int = 5, memory_pages: int = 200) -> dict[str, Any]:
    """Run every case, print the table and return the figures."""
    with tempfile.TemporaryDirectory(prefix="bench-docling-") as directory:
        pdf = make_pdf(Path(directory) / f"long-{pages}.pdf", pages)
        big = make_pdf(Path(directory) / f"long-{memory_pages}.pdf", memory_pages)
        extractor = Extractor()
        gc_rows = bench_gc(pdf, pages, rounds)
        rows = bench_pdf(pdf, pages, rounds, extractor)
        rows += bench_mixed(rounds, extractor)
        rows.append(measure_memory(big, batch_pages=50))
        rows.append(measure_memory(big, batch_pages=memory_pages))  # one conversion, for comparison

    bare, with_callback, extractor_seconds = (rows[n]["seconds"] for n in range(3))
    rows = gc_rows + rows
    summary = {
        # docling's own page events, and the Extractor's whole per-page path, against a bare conversion
        "docling_progress_overhead_pct": round(100 * (with_callback / bare - 1), 1),
        "extractor_overhead_pct": round(100 * (extractor_seconds / bare - 1), 1),
        # docling's work under CPython's default collector settings against `settle`'s
        "settled_gc_speedup": round(gc_rows[0]["seconds"] / gc_rows[1]["seconds"], 2),
        "rows": rows,
    }
    print(f"{'case':<62} {'seconds':>8} {'pages/s':>8} {'docs/s':>7} {'peak MB':>8}")
    for row in rows:
        print(
            f"{row['case']:<62} {row['seconds']:>8.3f} {row.get('pages_per_s', 0):>8.1f} "
            f"{row.get('docs_per_s', 0):>7.1f} {row.get('peak_rss_mb', 0):>8}"
        )
    print(
        f"per-page progress overhead: docling {summary['docling_progress_overhead_pct']} %, "
        f"extractor (progress, PDF check, deadline) {summary['extractor_overhead_pct']} %"
    )
    print(f"docling work, settled GC vs default: {summary['settled_gc_speedup']}x as fast")
    return summary


def run(out_dir: Path) -> dict[str, Any]:
    """Entry point of `just bench` (tests/benchmarks/__main__.py)."""
    return measure()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-pages", type=int, default=200)
    parser.add_argument("--child-memory", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch-pages", type=int, default=50, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        _child_memory(args.child_memory, args.batch_pages)
        return
    print(json.dumps(measure(args.pages, args.rounds, args.memory_pages)))


if __name__ == "__main__":
    main()
