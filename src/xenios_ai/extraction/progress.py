"""One `Extractor.extract` call's state (`Run`) and Docling's progress callback (`ProgressRelay`): page
events become the caller's progress, the deadline is checked between pages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xenios_ai.extraction.models import ExtractionOptions, ProgressCallback
from xenios_ai.extraction.sniff import DocumentFormat
from xenios_ai.extraction.watchdog import DeadlineExceeded

if TYPE_CHECKING:
    from docling.datamodel.progress import ConversionProgressEvent

PAGES_SHARE = 0.9
"""Share of the progress bar for the pages; exporting and chunking take the rest."""


class Abort(BaseException):
    """Carries an exception out of docling, which swallows every `Exception` its progress callbacks raise."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


@dataclass
class Run:
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


class ProgressRelay:
    """Docling progress callback: page events become ``(fraction, "page 3/10")`` calls to the caller.

    Also enforces the deadline between pages. Whatever the caller's callback raises leaves docling as
    `Abort`.
    """

    def __init__(self, run: Run, deadline: float) -> None:
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
                self.run.report(PAGES_SHARE * done / total, f"page {done}/{total}")
            if time.monotonic() > self.deadline:
                raise DeadlineExceeded
        except BaseException as exc:
            self.aborted = True
            raise Abort(exc) from None
