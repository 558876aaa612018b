"""The job-kind registry: every kind the process knows, by name.

The job core reads kinds only from here; it never imports one. Each kind declares itself (a `JobKind`
in its own package) and the composition root, `xenios_ai.kinds`, registers them all; the API app and
the worker entry point import that root.
"""

from __future__ import annotations

from xenios_ai.errors import NotFound
from xenios_ai.jobs.models import JobKind

KINDS: dict[str, JobKind] = {}
"""Registered kinds by name (read it; add through `register`)."""


def register(kind: JobKind) -> JobKind:
    """Add ``kind``; a second kind of the same name is a programming error."""
    known = KINDS.get(kind.name)
    if known is not None and known is not kind:
        raise ValueError(f"job kind {kind.name!r} is declared twice")
    KINDS[kind.name] = kind
    return kind


def kind_named(name: str) -> JobKind:
    """The registered kind ``name``; 404 ``unknown_job_kind`` when there is none."""
    kind = KINDS.get(name)
    if kind is None:
        raise NotFound(f"unknown job kind {name!r}", code="unknown_job_kind")
    return kind


def registered() -> list[JobKind]:
    """Every registered kind, in registration order."""
    return list(KINDS.values())
