"""Multipart uploads streamed straight into blob storage, for job kinds submitted with a file.

Litestar's own form parsing (``request.form()``, ``UploadFile``) spools every file into a temporary file
(in memory up to 1 MiB, then on disk) and hands it over only once the whole body has arrived, under the
app's ``request_max_body_size``. A 100 MB upload would be written twice and its type and size judged only
at the end. Here the body is parsed as it arrives (``multipart.PushMultipartParser``, the parser Litestar
itself uses) and the file part goes directly to `BlobStorage.put`:

- a Content-Length above the limit is refused (413) before a byte is read, and so is a chunked body as
  soon as it passes the limit plus `FORM_OVERHEAD_BYTES` (a preamble the parser would skip, say);
- reading stops at the final boundary: an epilogue after it is never read;
- a client that disconnects mid-body is `ClientGone` (499), not a server error;
- the file's first bytes decide its type (415) before the rest is read;
- the size limit is enforced while streaming (413 as soon as it is crossed; the rest is never read);
- the other fields (``options`` as JSON, ``webhook_url``) may come before or after the file;
- a kind that takes several files (`UploadSpec.max_files`: a transcription's tracks) gets the ``file``
  field repeated, in order; the size limit applies to each file and to their sum.

Memory per upload is one network chunk plus the storage's write buffer.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
import multipart  # type: ignore[import-untyped]
from litestar import Request
from litestar.types.asgi_types import HTTPRequestEvent
from multipart import (
    MultipartSegment,
    ParserError,
    ParserLimitReached,
    PushMultipartParser,
)

from xenios_ai.errors import ClientGone, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from xenios_ai.jobs.models import JobKind, Upload
from xenios_ai.jobs.service import JobService, Submitted
from xenios_ai.storage.sources import Source, check_source

FILE_FIELD = "file"
FORM_OVERHEAD_BYTES = 256 * 1024
"""What a form may add to the file: boundaries, part headers and the small text fields."""
_MAX_FIELD_BYTES = 64 * 1024
_MAX_PARTS = 16
_END = object()


class Part:
    """One part of the form; read its body once, with `chunks` or `text`."""

    def __init__(self, segment: MultipartSegment, form: MultipartStream) -> None:
        self.name: str = segment.name or ""
        self.filename: str | None = segment.filename
        self.content_type: str | None = segment.content_type
        self._form = form
        self.done = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self.done:
            event = await self._form.next_event()
            if event is None or event is _END:
                self.done = True
                return
            yield bytes(event)

    async def text(self, limit: int = _MAX_FIELD_BYTES) -> str:
        data = bytearray()
        async for chunk in self.chunks():
            data += chunk
            if len(data) > limit:
                raise PayloadTooLarge(f"form field {self.name!r} is larger than {limit} bytes")
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise InvalidInput(f"form field {self.name!r} is not UTF-8", code="invalid_form") from None


class MultipartStream:
    """A multipart/form-data body read part by part as it arrives."""

    def __init__(self, chunks: AsyncIterator[bytes], boundary: str) -> None:
        self._chunks = chunks
        self._parser = PushMultipartParser(boundary, max_segment_count=_MAX_PARTS)
        self._events: deque[Any] = deque()

    @property
    def complete(self) -> bool:
        """The final boundary was parsed (``closed`` waits for the end of the body, epilogue included;
        multipart (2.0) has no public flag for it, so this reads its state, pinned by the tests)."""
        return self._parser.closed or self._parser._state is multipart._COMPLETE

    async def next_event(self) -> Any:
        while not self._events:
            if self.complete:
                return _END
            chunk = await anext(self._chunks, b"")
            try:
                self._events.extend(self._parser.parse(chunk))
            except ParserLimitReached:
                raise InvalidInput(
                    f"a form may have at most {_MAX_PARTS} parts", code="invalid_form"
                ) from None
            except ParserError as exc:
                raise InvalidInput(f"the multipart body is malformed: {exc}", code="invalid_form") from None
        return self._events.popleft()

    async def parts(self) -> AsyncIterator[Part]:
        part: Part | None = None
        while True:
            if part is not None and not part.done:  # the caller skipped a part's body
                async for _ in part.chunks():
                    pass
            event = await self.next_event()
            if event is _END:
                return
            if isinstance(event, MultipartSegment):
                part = Part(event, self)
                yield part


async def body_chunks(request: Request[Any, Any, Any], max_bytes: int) -> AsyncIterator[bytes]:
    """The body as it arrives, however it is framed (Content-Length or chunked): `PayloadTooLarge` once
    it passes ``max_bytes``, `ClientGone` if the client disconnects before its end."""
    received = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("the client disconnected during the upload")
        message = cast("HTTPRequestEvent", message)
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > max_bytes:
            raise PayloadTooLarge(
                f"the request body is larger than {max_bytes} bytes", extra={"max_bytes": max_bytes}
            )
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def form_boundary(request: Request[Any, Any, Any]) -> str:
    media_type, params = request.content_type
    boundary = params.get("boundary")
    if media_type != "multipart/form-data" or not boundary:
        raise UnsupportedMediaType(
            "send the file as multipart/form-data (field 'file')", code="multipart_required"
        )
    return boundary


async def _store(
    jobs: JobService, kind: JobKind, job_id: uuid.UUID, part: Part, files: list[Upload], limit: int
) -> Upload:
    """The form's next file, within what the ``files`` before it left of the size ``limit``."""
    left = limit - sum(file.size for file in files)
    try:
        return await jobs.store_upload(
            kind, job_id, part.filename, part.chunks(), index=len(files), max_bytes=left
        )
    except PayloadTooLarge as exc:
        if not files:
            raise
        raise PayloadTooLarge(
            f"the files together are larger than the limit of {limit} bytes", extra={"max_bytes": limit}
        ) from exc


async def receive_upload(
    request: Request[Any, Any, Any],
    jobs: JobService,
    kind: JobKind,
    owner: str,
    *,
    idempotency_key: str | None = None,
) -> Submitted:
    """Submit a ``kind`` job from a multipart request: the file in field ``file`` (repeated for a kind
    taking several, up to `UploadSpec.max_files`), optional ``options``
    (JSON for the kind's ``input_type``, which becomes the job's input, less the secret its upload's
    ``split_secret`` takes out) and ``webhook_url`` fields.

    The route must set ``request_max_body_size=None`` (this function enforces the limits) and must not
    declare a ``data`` parameter (Litestar would read the body first).
    """
    spec = kind.upload
    assert spec is not None, f"job kind {kind.name} takes no upload"
    if request.content_type[0] == "application/json":
        return await receive_source(request, jobs, kind, owner, idempotency_key=idempotency_key)
    limit = spec.limit(jobs.settings)
    boundary = form_boundary(request)
    max_body = limit + FORM_OVERHEAD_BYTES
    announced = request.content_length
    if announced is not None and announced > max_body:
        raise PayloadTooLarge(
            f"the upload is larger than the limit of {limit} bytes", extra={"max_bytes": limit}
        )
    job_id = uuid.uuid4()
    fields: dict[str, str] = {}
    files: list[Upload] = []
    upload: Upload | None = None
    try:
        async for part in MultipartStream(body_chunks(request, max_body), boundary).parts():
            if part.name == FILE_FIELD:
                if len(files) >= spec.max_files:
                    many = "exactly one file" if spec.max_files == 1 else f"at most {spec.max_files} files"
                    raise InvalidInput(f"send {many}", code="invalid_form")
                files.append(await _store(jobs, kind, job_id, part, files, limit))
            elif part.name in ("options", "webhook_url", "webhook_include_result"):
                fields[part.name] = await part.text()
            else:
                raise InvalidInput(
                    f"unknown form field {part.name!r}; send file, options, webhook_url, webhook_include_result",
                    code="invalid_form",
                )
        if not files:
            raise InvalidInput("the form has no file (field 'file')", code="missing_file")
        upload = msgspec.structs.replace(files[0], more=tuple(files[1:]))
        try:
            options = msgspec.json.decode(fields.get("options") or "{}", type=kind.input_type)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidInput(f"options: {exc}", code="invalid_options") from None
        if spec.check_files is not None:
            spec.check_files(options, len(files))
        secret = None
        if spec.split_secret is not None:
            options, secret = spec.split_secret(options)
        webhook_url = await jobs.check_webhook(fields.get("webhook_url") or None)
        include = (fields.get("webhook_include_result") or "false").strip().lower()
        if include not in ("true", "false"):
            raise InvalidInput("webhook_include_result: send true or false", code="invalid_form")
    except BaseException:
        for file in files:
            await jobs.storage.delete(file.key)
        raise
    return await jobs.submit(
        kind, owner, options, idempotency_key=idempotency_key, webhook_url=webhook_url,
        webhook_include_result=include == "true", upload=upload, job_id=job_id, secret=secret,
    )  # fmt: skip


class SourceRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A job submitted with a reference to its file instead of the file (``application/json``)."""

    source: Source
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    webhook_url: str | None = None
    webhook_include_result: bool = False


async def receive_source(
    request: Request[Any, Any, Any],
    jobs: JobService,
    kind: JobKind,
    owner: str,
    *,
    idempotency_key: str | None = None,
) -> Submitted:
    """Submit a ``kind`` job whose file is named by ``{"source": {"storage_key": ...} | {"url": ...}}``
    (with optional ``options``, ``webhook_url``, ``webhook_include_result``). The source is checked here
    (shape, allowed prefix or host: 422 ``invalid_source`` / 403 ``source_forbidden``) and fetched by the
    worker: the API never reads its bytes."""
    spec = kind.upload
    assert spec is not None, f"job kind {kind.name} takes no upload"
    body = bytearray()
    async for chunk in body_chunks(request, _MAX_FIELD_BYTES):
        body += chunk
    try:
        data = msgspec.json.decode(bytes(body) or b"{}", type=SourceRequest)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidInput(
            f'send {{"source": {{"storage_key": ...}}}} or {{"source": {{"url": ...}}}}: {exc}',
            code="invalid_source",
        ) from None
    source = check_source(data.source, jobs.settings, owner)
    try:
        options = msgspec.convert(data.options, kind.input_type)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"options: {exc}", code="invalid_options") from None
    if spec.check_files is not None:
        spec.check_files(options, 1)
    secret = None
    if spec.split_secret is not None:
        options, secret = spec.split_secret(options)
    webhook_url = await jobs.check_webhook(data.webhook_url)
    return await jobs.submit(
        kind, owner, options, idempotency_key=idempotency_key, webhook_url=webhook_url,
        webhook_include_result=data.webhook_include_result, source=source, secret=secret,
    )  # fmt: skip
