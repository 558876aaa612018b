"""The extraction kind (`EXTRACTION`): its input, result, handler, and the worker process's one `Extractor`.

Password of an encrypted PDF: it never reaches the job row or a log line. The API takes it out of the
options (`split_password`) and the job service keeps it as the job's secret blob
(``jobs/<id>/secret``, next to the upload; `jobs.service.JobService.submit`). The handler reads it at the
start of every attempt and deletes it when the attempt ends with an outcome (succeeded, failed, cancelled).
An attempt that ends without one (the worker hands the job back at shutdown, or dies) leaves it for the
next attempt. Whatever ends the job (also a cancel while queued, the sweep, a hard time limit), the job
service deletes the secret then (`JobService.after_terminal`); the blob is one of the job's blobs, so
retention removes it in any case. An Idempotency-Key replay with another password counts as the same
request.

Large results: the Docling JSON document goes to blob storage when it is larger than
EXTRACTION_INLINE_DOCUMENT_BYTES; the result then carries ``document_file`` (its URL under the job) instead of
``document``. Markdown, text and chunks stay in the row (a follow-up analysis reads the markdown).

The `Extractor` is built once per worker process: at worker boot (`warm_up`, the kind's ``prepare``) when the
process serves the ``extraction`` queue, in a background thread, so the worker takes jobs of other queues
at once; the first extraction job waits for it. In layout mode the build is waited for at boot, and without
torch or the models the worker refuses to start, logging the error with the fix (`prepare_extraction`).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from loguru import logger

from xenios_ai.errors import XeniosError
from xenios_ai.extraction.engine import Extractor
from xenios_ai.extraction.models import DocumentLimits, ExtractionOptions, ExtractionResult, Pipeline
from xenios_ai.extraction.sniff import SNIFF_BYTES, DocumentFormat, sniff_document_format
from xenios_ai.gc_tuning import settle
from xenios_ai.jobs.context import JobContext
from xenios_ai.jobs.followups import MAX_THEN, analyse_after, check_then
from xenios_ai.jobs.models import FollowUp, JobKind, RetryPolicy, UploadSpec
from xenios_ai.llm.tasks import AnalysisTask
from xenios_ai.llm.types import Options

if TYPE_CHECKING:
    from xenios_ai.settings import Settings

DOCUMENT_FILE = "document.json"


class ExtractionRequest(ExtractionOptions, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The ``options`` form field of ``POST /api/v1/jobs/extraction``, and the job's input (without the
    password, which is kept apart)."""

    then: Annotated[list[AnalysisTask], msgspec.Meta(max_length=MAX_THEN)] = msgspec.field(
        default_factory=list
    )
    """Analyses to run on the extracted markdown once the extraction succeeded: follow-up jobs whose
    ``source_job_id`` is this job; their ids are in this job's result (``follow_ups``)."""

    then_options: Options | None = None
    """Options of the ``then`` analyses: ``temperature``, ``max_tokens``, ``redact`` and ``redact_names``
    (personal details replaced before the LLM sees the text, restored in the analyses)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_then(self.then)
        if self.then and not {"markdown", "text"} & set(self.output_formats):
            raise ValueError("then needs markdown or text in output_formats")


class ResultFile(msgspec.Struct, kw_only=True):
    """A part of the result kept in blob storage: GET ``url`` with the job's credentials."""

    url: str
    size: int
    media_type: str = "application/json"


class ExtractionJobResult(ExtractionResult, kw_only=True):
    """An extraction job's result: the `ExtractionResult` plus what the job system adds."""

    document_file: ResultFile | None = None
    """Where the Docling JSON document is when it was too large for the row (``document`` is then null)."""
    follow_ups: list[FollowUp] = msgspec.field(default_factory=list)


def split_password(request: ExtractionRequest) -> tuple[ExtractionRequest, bytes | None]:
    """The job's input without the password, and the password as the job's secret (API side)."""
    if request.password is None:
        return request, None
    return msgspec.structs.replace(request, password=None), request.password.encode()


def extraction_text(result: Any) -> str | None:
    """The text a follow-up analysis reads from an extraction's result: the markdown, else the text."""
    if not isinstance(result, dict):
        return None
    text = result.get("markdown") or result.get("text")
    return text if isinstance(text, str) else None


def run_extraction(ctx: JobContext, request: ExtractionRequest) -> ExtractionJobResult:
    """The extraction job's handler (on the worker's actor thread): convert the uploaded document, then
    submit the ``then`` analyses on its text (on success)."""
    upload = ctx.job.upload
    if upload is None:
        raise XeniosError(f"extraction job {ctx.job.id} has no file")
    pdf = upload.format == DocumentFormat.PDF.value  # the pipeline is the PDF converter's only
    extractor = process_extractor(ctx.settings, request.pipeline if pdf else None)
    secret = ctx.call(ctx.read_secret())
    password = secret.decode() if secret is not None else None
    try:
        with ctx.upload_file() as path:
            result = extractor.extract(
                path,
                DocumentFormat(upload.format),
                msgspec.structs.replace(request, password=password),
                progress=ctx.progress_sync,
            )
    except Exception:  # an outcome (failed, cancelled): the password has served
        ctx.call(ctx.delete_secret())
        raise
    ctx.call(ctx.delete_secret())

    fields = {name: getattr(result, name) for name in result.__struct_fields__}
    if result.document is not None:
        data = msgspec.json.encode(result.document)
        if len(data) > ctx.settings.extraction_inline_document_bytes:
            ctx.call(ctx.store_blob(DOCUMENT_FILE, data))
            url = f"/api/v1/jobs/{ctx.job.id}/result/{DOCUMENT_FILE}"
            fields |= {"document": None, "document_file": ResultFile(url=url, size=len(data))}
    text = result.markdown or result.text
    fields["follow_ups"] = analyse_after(
        ctx,
        request.then,
        has_text=bool(text and text.strip()),
        nothing="the document has no text: nothing to analyse",
        options=request.then_options,
    )
    return ExtractionJobResult(**fields)


# --- One Extractor per worker process ------------------------------------------------------------------


class _ProcessExtractor:
    """The process's `Extractor`, built once in a background thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[Pipeline, Future[Extractor]] = {}

    def start(self, settings: Settings, pipeline: Pipeline) -> Future[Extractor]:
        with self._lock:
            future = self._futures.get(pipeline)
            if future is None:
                future = self._futures[pipeline] = Future()
                threading.Thread(
                    target=self._build, args=(settings, pipeline, future), name="extractor-build", daemon=True
                ).start()
            return future

    def _build(self, settings: Settings, pipeline: Pipeline, future: Future[Extractor]) -> None:
        started = time.monotonic()
        try:
            extractor = Extractor(
                pipeline,
                artifacts_path=settings.docling_artifacts_path,
                max_pages=settings.extraction_max_pages,
                document_timeout=settings.extraction_timeout_seconds,
                limits=DocumentLimits.from_settings(settings),
            )
        except XeniosError as exc:  # a configuration problem: it stays until the worker restarts
            logger.error("document extraction is unavailable ({}): {}", exc.code, exc.detail)
            future.set_exception(exc)
        except Exception as exc:
            logger.opt(exception=exc).error("building the document extractor failed; the next job retries")
            with self._lock:
                self._futures.pop(pipeline, None)
            future.set_exception(XeniosError("the document extractor could not be built; see the worker log"))
        else:
            settle()  # docling's converter and modules live as long as the process (see `gc_tuning`)
            seconds = time.monotonic() - started
            logger.info("document extractor ready ({} pipeline) in {:.1f} s", extractor.pipeline, seconds)
            future.set_result(extractor)


_PROCESS_EXTRACTOR = _ProcessExtractor()


def warm_up(settings: Settings, pipeline: Pipeline | None = None) -> Future[Extractor]:
    """Start building the process's `Extractor` for ``pipeline`` (default DOCLING_PIPELINE) in a background
    thread (once); its future. Never raises: a failed build fails the jobs that need it, with its code."""
    return _PROCESS_EXTRACTOR.start(settings, pipeline or settings.docling_pipeline)


def prepare_extraction(settings: Settings) -> None:
    """The kind's ``prepare``: the native build runs in the background (the worker takes other queues'
    jobs meanwhile). In layout mode the build is waited for: without torch or the layout models the worker
    refuses to start (exit 3, the fix in its log, `jobs.runtime.prepare_kinds`) instead of failing every
    extraction, DOCX included, while readiness and uploads said yes (issue 20, decision 0010)."""
    warm_up(settings)
    if settings.docling_pipeline == "layout":
        process_extractor(settings)


def process_extractor(settings: Settings, pipeline: Pipeline | None = None) -> Extractor:
    """The process's `Extractor` for ``pipeline`` (a job's choice; default DOCLING_PIPELINE), waiting for
    its build; raises the build's error (a fresh copy): a job asking for layout on a worker without the
    models fails with ``layout_models_unavailable``, others go on."""
    try:
        return warm_up(settings, pipeline).result()
    except XeniosError as exc:
        raise XeniosError(exc.detail, code=exc.code) from None


EXTRACTION = JobKind(
    name="extraction",
    queue="extraction",
    input_type=ExtractionRequest,
    result_type=ExtractionJobResult,
    handler=run_extraction,
    retry=RetryPolicy(max_attempts=2),  # a document killing its worker process: two tries, not three
    upload=UploadSpec(
        sniff=sniff_document_format,
        sniff_bytes=SNIFF_BYTES,
        max_bytes=lambda settings: settings.extraction_max_upload_bytes,
        formats_hint="PDF, DOCX, PPTX, XLSX, HTML, Markdown (or plain text), CSV",
        split_secret=split_password,  # the PDF's password never reaches the job's row
    ),
    text_of=extraction_text,
    release_on_shutdown=True,
    prepare=prepare_extraction,  # the converter at boot; layout mode without its models stops the worker
)
