"""The composition root of the job kinds: importing it registers every kind.

The API app (submits) and the worker entry point (runs) import it; nothing in the job core does. A new
kind is a `JobKind` in its own package, one line here, and its route (see docs/architecture.md).
"""

from __future__ import annotations

from xenios_ai.analysis import ANALYSIS
from xenios_ai.extraction.job import EXTRACTION
from xenios_ai.jobs.models import JobKind
from xenios_ai.jobs.registry import register
from xenios_ai.transcription.job import TRANSCRIPTION

ALL: tuple[JobKind, ...] = tuple(register(kind) for kind in (ANALYSIS, TRANSCRIPTION, EXTRACTION))
"""Registered in this order (the order of `jobs.registry.registered`, as the old declarations)."""

__all__ = ["ALL", "ANALYSIS", "EXTRACTION", "TRANSCRIPTION"]
