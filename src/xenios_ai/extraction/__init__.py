"""Document extraction: format sniffing for the API, Docling conversion for the workers.

- `sniff`: the format from the bytes (`sniff_document_format`, `sniff_document_file`); the API uses it.
- `models`: `ExtractionOptions` in, `ExtractionResult` out.
- `engine`: the `Extractor`. docling, docling-core and pypdfium2 are imported inside it, never by the API
  process. A worker builds one `Extractor` (importing docling and building its converter costs seconds)
  and calls `Extractor.extract` once per job.
- `job`: the extraction job kind's input, result and handler (password out of the row, large Docling
  documents in blob storage, the ``then`` follow-up analysis, one `Extractor` per worker process).

Facts about docling-slim 2.142.1 the engine relies on, measured here:

- PDFs use the model-free `NativePdfPipeline` by default: exact text and positions, no headings or tables. The
  layout pipeline (headings, tables) needs torch and the docling models; without them it raises
  ModuleNotFoundError / FileNotFoundError / LocalEntryNotFoundError / RuntimeError, all outside
  ``raises_on_error=False``. They become ``layout_models_unavailable`` when the `Extractor` is built.
- ``DocumentConverter.convert(progress_callback=...)`` reports every page; its cost is within noise (a
  50-page PDF through `Extractor.extract` with progress: +1 % over a bare whole-document convert). The
  callback's exceptions are logged and swallowed by docling, so a cancellation is carried out of docling as
  a `BaseException` (`_Abort`) and re-raised as the caller's own exception.
- The native pipeline keeps every parsed page until the document is assembled: a 200-page PDF peaked at
  1 GB RSS in one conversion (0.7 GB with the parser's read-ahead cut to 2 pages), 0.48 GB when converted
  in 50-page ranges joined afterwards. Each range costs ~50 ms (opening the file again): +3 % on 200 pages,
  nothing up to 50 pages, which convert in one go.
- The PDF password reaches docling-parse through the backend options only, and docling-parse reports a
  missing and a wrong password alike ("could not load document"). pypdfium2 tells them apart
  (``PdfiumError.err_code == FPDF_ERR_PASSWORD``), so PDFs are opened with pypdfium2 first, which also gives
  the page count for the page limit before any conversion.
- A PDF cut in half: pypdfium2 refuses it ("Data format error") while docling-parse recovers the complete
  pages and reports SUCCESS; the result here is marked partial, with the pages declared by the file but
  missing listed as failed.
"""

from xenios_ai.extraction.engine import Extractor
from xenios_ai.extraction.models import (
    DEFAULT_CHUNK_MAX_TOKENS,
    Chunk,
    ExtractionOptions,
    ExtractionResult,
    OutputFormat,
    PageStatus,
    Pipeline,
    ProgressCallback,
    Timings,
)
from xenios_ai.extraction.sniff import SNIFF_BYTES, DocumentFormat, sniff_document_file, sniff_document_format

__all__ = [
    "DEFAULT_CHUNK_MAX_TOKENS",
    "SNIFF_BYTES",
    "Chunk",
    "DocumentFormat",
    "ExtractionOptions",
    "ExtractionResult",
    "Extractor",
    "OutputFormat",
    "PageStatus",
    "Pipeline",
    "ProgressCallback",
    "Timings",
    "sniff_document_file",
    "sniff_document_format",
]
