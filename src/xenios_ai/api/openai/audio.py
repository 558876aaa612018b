"""POST /v1/audio/transcriptions: OpenAI's transcription route over a transcription job, answered when done.

The upload is streamed into storage as on POST /api/v1/jobs/transcription (type from the bytes: 415;
TRANSCRIPTION_MAX_UPLOAD_BYTES: 413), a transcription job is submitted (the job-submit rate limit counts
it) and the request waits for it on the transcription queue: same workers, limits and errors. Audio longer
than OPENAI_SYNC_MAX_SECONDS fails ``audio_too_long`` (413, before decoding when the file tells its
duration) and the error names the async route. A client that leaves cancels the job. The answer tells the
job in ``X-Xenios-Job-Id``.

Form fields: ``file`` (one), ``model`` (``whisper-1``, an alias of the configured model, or the
model's own name), ``language`` (ISO 639-1), ``prompt`` (the first window's context), ``response_format``
(``json``, ``text``, ``srt``, ``vtt``, ``verbose_json``, ``diarized_json``), ``timestamp_granularities[]``
(``segment``, ``word``: word timings in ``verbose_json``), ``temperature`` (0 only), ``stream``
(false only). Any other field is a 400 naming it.

``text`` is the transcript as /api/v1's ``transcript.txt`` (``Coach: ...`` lines when the speakers are
known: channels or tracks); ``verbose_json`` segments carry ``speaker`` when known; ``diarized_json``
segments are OpenAI's ``transcript.text.segment`` with the speaker (null on a mono recording: no acoustic
diarization here). ``language`` is the ISO code the model detected or was given.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from litestar import Request, Response, post
from litestar.openapi import ResponseSpec

from xenios_ai.api.auth import require_user
from xenios_ai.api.llm import caller_for
from xenios_ai.api.openai.errors import ERROR_RESPONSES, invalid, unsupported
from xenios_ai.api.openai.schemas import ErrorResponse
from xenios_ai.api.ratelimit import limit_job_submits
from xenios_ai.api.uploads import FORM_OVERHEAD_BYTES, MultipartStream, body_chunks, form_boundary
from xenios_ai.errors import (
    ClientGone,
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    UpstreamUnavailable,
    XeniosError,
)
from xenios_ai.jobs.models import Job, Upload
from xenios_ai.jobs.service import JobService
from xenios_ai.transcription.engine import BUNDLED_MODEL
from xenios_ai.transcription.formats import MEDIA_TYPES, render
from xenios_ai.transcription.job import TRANSCRIPTION
from xenios_ai.transcription.models import TranscriptionJobOptions

WHISPER_ALIAS: Final = "whisper-1"
FORMATS: Final = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
_FIELDS: Final = {
    "model",
    "language",
    "prompt",
    "response_format",
    "temperature",
    "stream",
    "timestamp_granularities[]",
    "timestamp_granularities",
}
_USER_ERRORS: Final = {
    "unreadable_audio": "file",
    "unsupported_format": "file",
    "empty_file": "file",
    "unsupported_language": "language",
    "invalid_options": None,
}
"""Failed-job codes that are the request's fault (400), with the parameter to blame."""
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class _Form:
    upload: Upload
    fields: dict[str, list[str]]


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise invalid(name, f"send {name} once")
    return values[0].strip()


def _options(
    fields: dict[str, list[str]], model_names: tuple[str, ...], max_seconds: float
) -> tuple[TranscriptionJobOptions, str, bool]:
    """(options, response_format, word timings asked) from the form's fields."""
    model = _one(fields, "model")
    if not model:
        raise invalid("model", f"model is required: {WHISPER_ALIAS} or {model_names[-1]}")
    if model not in model_names:
        raise InvalidInput(
            f"the model {model[:64]!r} does not exist; use {WHISPER_ALIAS} or {model_names[-1]}",
            code="unknown_task",
        )
    response_format = _one(fields, "response_format") or "json"
    if response_format not in FORMATS:
        raise invalid("response_format", f"response_format is one of {', '.join(FORMATS)}")
    temperature = _one(fields, "temperature")
    if temperature is not None:
        try:
            zero = float(temperature) == 0.0
        except ValueError:
            zero = False
        if not zero:
            raise unsupported("temperature", "only temperature 0 is supported")
    stream = _one(fields, "stream")
    if stream is not None and stream.lower() != "false":
        raise unsupported("stream", "streamed transcriptions are not supported")
    granularities = [*fields.get("timestamp_granularities[]", ()), *fields.get("timestamp_granularities", ())]
    for value in granularities:
        if value not in ("segment", "word"):
            raise invalid("timestamp_granularities[]", "timestamp granularities are segment and word")
    words = "word" in granularities
    if granularities and response_format != "verbose_json":
        raise invalid(
            "timestamp_granularities[]", "timestamp_granularities needs response_format verbose_json"
        )
    try:
        options = msgspec.convert(
            {
                "language": _one(fields, "language") or None,
                "initial_prompt": _one(fields, "prompt") or None,
                "word_timestamps": words,
                "max_seconds": max_seconds,
            },
            TranscriptionJobOptions,
        )
    except msgspec.ValidationError as exc:
        param = "language" if "language" in str(exc) else "prompt"
        raise invalid(param, f"{param}: {exc}") from None
    return options, response_format, words


async def _form(request: Request[Any, Any, Any], jobs: JobService, job_id: uuid.UUID) -> _Form:
    spec = TRANSCRIPTION.upload
    assert spec is not None
    limit = spec.limit(jobs.settings)
    boundary = form_boundary(request)
    announced = request.content_length
    if announced is not None and announced > limit + FORM_OVERHEAD_BYTES:
        raise PayloadTooLarge(
            f"the upload is larger than the limit of {limit} bytes", extra={"param": "file"}
        )
    fields: dict[str, list[str]] = {}
    upload: Upload | None = None
    refused: InvalidInput | None = None
    """A field we refuse: the rest of the form is read (not stored) before it is answered, so a client
    still sending its file reads the 400 instead of a closed connection."""
    form = MultipartStream(body_chunks(request, limit + FORM_OVERHEAD_BYTES), boundary)
    try:
        async for part in form.parts():
            if refused is not None:
                continue
            if part.name == "file":
                if upload is not None:
                    refused = invalid("file", "send one file")
                    continue
                upload = await jobs.store_upload(TRANSCRIPTION, job_id, part.filename, part.chunks())
            elif part.name in _FIELDS:
                fields.setdefault(part.name, []).append(await part.text())
            else:
                refused = unsupported(part.name[:64])
        if refused is not None:
            raise refused
        if upload is None:
            raise invalid("file", "the form has no file (field 'file')")
    except BaseException:
        if upload is not None:
            await jobs.storage.delete(upload.key)
        raise
    return _Form(upload, fields)


async def _finished(jobs: JobService, job: Job) -> Job:
    last = job
    async for kind, item in jobs.stream(job):
        if kind == "state":
            assert isinstance(item, Job)
            last = item
    return last


def _failure(job: Job, sync_max: float) -> XeniosError:
    error = job.error
    code, message = (error.code, error.message) if error is not None else ("internal_error", "the job failed")
    extra = {"job_id": str(job.id)}
    if code == "audio_too_long":
        return PayloadTooLarge(
            f"{message}; this route transcribes up to {sync_max:g} s (OPENAI_SYNC_MAX_SECONDS): submit longer"
            " recordings to POST /api/v1/jobs/transcription and follow the job",
            code=code,
            extra=extra | {"param": "file"},
        )
    if code in _USER_ERRORS:
        param = _USER_ERRORS[code]
        return InvalidInput(message, code=code, extra=extra | ({"param": param} if param else {}))
    if code == "model_unavailable":
        return UpstreamUnavailable(message, code=code, extra=extra)
    if job.status == "cancelled":
        return Conflict("the transcription job was cancelled", code="cancelled", extra=extra)
    return XeniosError(message, code=code, extra=extra)


def _usage(result: dict[str, Any]) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(float(result.get("duration") or 0.0))}


def _body(result: dict[str, Any], response_format: str, words: bool) -> tuple[bytes, str]:
    if response_format in ("text", "srt", "vtt"):
        fmt = "txt" if response_format == "text" else response_format
        return render(result, fmt).encode(), MEDIA_TYPES[fmt]  # type: ignore[arg-type]
    segments = [s for s in result.get("segments") or () if isinstance(s, dict)]
    text = result.get("text") or ""
    if response_format == "json":
        return _encode({"text": text, "usage": _usage(result)}), "application/json"
    if response_format == "diarized_json":
        diarized = [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{s.get('id', index)}",
                "start": s.get("start"),
                "end": s.get("end"),
                "text": s.get("text"),
                "speaker": s.get("speaker"),
            }
            for index, s in enumerate(segments)
        ]
        body = {"task": "transcribe", "duration": result.get("duration"), "text": text, "segments": diarized}
        return _encode(body | {"usage": _usage(result)}), "application/json"
    verbose: dict[str, Any] = {
        "task": "transcribe",
        "language": result.get("language"),
        "duration": result.get("duration"),
        "text": text,
        "segments": [
            {k: s[k] for k in ("id", "start", "end", "text", "speaker") if s.get(k) is not None}
            for s in segments
        ],
    }
    if words:
        verbose["words"] = [
            {k: w[k] for k in ("word", "start", "end", "speaker") if w.get(k) is not None}
            for s in segments
            for w in s.get("words") or ()
        ]
    return _encode(verbose | {"usage": _usage(result)}), "application/json"


@post(
    "/audio/transcriptions",
    guards=[require_user, limit_job_submits],
    security=[{"apiKey": [], "supabaseJWT": []}],
    status_code=200,
    request_max_body_size=None,
    summary="OpenAI-compatible transcription of a short recording (a transcription job, waited for)",
    description=__doc__,
    responses={
        200: ResponseSpec(
            dict[str, Any],
            description="json: {text, usage}; verbose_json: {task, language, duration, text, segments, words?,"
            " usage}; diarized_json; or text/plain, SubRip, WebVTT",
        ),
        413: ResponseSpec(
            ErrorResponse,
            description="The upload is too large, or the audio longer than OPENAI_SYNC_MAX_SECONDS: use POST"
            " /api/v1/jobs/transcription",
        ),
        **{status: spec for status, spec in ERROR_RESPONSES.items() if status in (400, 401, 404, 429, 503)},
    },
)
async def transcriptions(request: Request[Any, Any, Any]) -> Response[Any]:
    services = request.app.state.services
    jobs: JobService = services.jobs
    settings = services.settings
    owner: str = request.scope["state"]["principal"].user_id
    job_id = uuid.uuid4()
    form = await _form(request, jobs, job_id)
    try:
        names = (WHISPER_ALIAS, settings.whisper_model or BUNDLED_MODEL)
        options, response_format, words = _options(form.fields, names, settings.openai_sync_max_seconds)
    except BaseException:
        await jobs.storage.delete(form.upload.key)
        raise
    submitted = await jobs.submit(TRANSCRIPTION, owner, options, upload=form.upload, job_id=job_id)
    try:
        job = await caller_for(request).until_disconnect(_finished(jobs, submitted.job))
    except ClientGone:
        with contextlib.suppress(XeniosError):  # it may have finished meanwhile
            await jobs.cancel(job_id, owner)
        raise
    if not job.terminal:  # the row went while we waited: the owner's data was erased (DELETE .../data)
        raise NotFound(
            "the transcription job was deleted before it finished (its owner's data was erased)",
            code="job_erased",
            extra={"job_id": str(job.id)},
        )
    if job.status != "succeeded" or not isinstance(job.result, dict):
        raise _failure(job, settings.openai_sync_max_seconds)
    body, media_type = _body(job.result, response_format, words)
    return Response(body, media_type=media_type, headers={"X-Xenios-Job-Id": str(job.id)})
