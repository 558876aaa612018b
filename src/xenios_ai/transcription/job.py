"""The transcription kind (`TRANSCRIPTION`): transcribe the upload with the worker process's one
`Transcriber` (loaded at worker boot), then submit the ``then`` analyses on the transcript.

One file: its channels are speakers when they differ (``channels``, see `separate`). Several files (the
multipart ``file`` field repeated, up to `MAX_SPEAKERS`): one track per person, merged into one timeline.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from xenios_ai.errors import InvalidInput
from xenios_ai.jobs.context import JobContext
from xenios_ai.jobs.followups import analyse_after
from xenios_ai.jobs.models import JobKind, UploadSpec
from xenios_ai.transcription import audio, channels
from xenios_ai.transcription.engine import shared_transcriber
from xenios_ai.transcription.models import (
    MAX_SPEAKERS,
    ProgressCallback,
    TranscriptionJobOptions,
    TranscriptionJobResult,
    TranscriptionOptions,
    TranscriptionResult,
    transcript_text,
)
from xenios_ai.transcription.separate import Transcribe, transcribe_recording, transcribe_tracks
from xenios_ai.transcription.sniff import SNIFF_BYTES, sniff_audio_format


def run_transcription(ctx: JobContext, options: TranscriptionJobOptions) -> TranscriptionJobResult:
    """The transcription job's handler (on the worker's actor thread)."""
    transcriber = shared_transcriber(ctx.settings)
    limit = transcriber.max_duration_seconds
    transcribe: Transcribe = transcriber.transcribe
    if options.max_seconds is not None:
        limit = options.max_seconds if limit is None else min(limit, options.max_seconds)
        transcribe = within_limit(transcriber.transcribe, limit)
    with ctx.upload_files() as paths:
        if options.max_seconds is not None:
            check_headers(paths, limit)
        if len(paths) > 1:
            result = transcribe_tracks(transcribe, paths, options, ctx.progress_sync, max_seconds=limit)
        else:
            result = transcribe_recording(transcribe, paths[0], options, ctx.progress_sync, max_seconds=limit)
    follow_ups = analyse_after(
        ctx,
        options.then,
        has_text=bool(result.text),
        nothing="the transcript is empty: nothing to analyse",
        options=options.then_options,
    )
    return TranscriptionJobResult(**msgspec.structs.asdict(result), follow_ups=follow_ups)


def check_headers(paths: list[Path], limit: float | None) -> None:
    """A job's own ``max_seconds``: ``audio_too_long`` before any decoding when the headers tell the
    duration (the transcriber checks its own limit itself)."""
    if limit is None:
        return
    seconds = [probed[1] for path in paths if (probed := channels.probe(path)) is not None]
    if all(s is not None for s in seconds) and sum(s or 0.0 for s in seconds) > limit:
        raise audio.too_long(sum(s or 0.0 for s in seconds), limit)


def within_limit(transcribe: Transcribe, limit: float | None) -> Transcribe:
    """``transcribe``, failing ``audio_too_long`` past a job's own ``max_seconds`` also where no header
    told the duration beforehand."""

    def run(
        path: Path, options: TranscriptionOptions, progress: ProgressCallback | None
    ) -> TranscriptionResult:
        result = transcribe(path, options, progress)
        if limit is not None and result.duration > limit:
            raise audio.too_long(result.duration, limit)
        return result

    return run


def check_files(options: TranscriptionJobOptions, files: int) -> None:
    """At submit: ``speakers`` and ``track_offsets`` fit the number of files (422 otherwise)."""
    if files > 1:
        if options.speakers and len(options.speakers) != files:
            raise InvalidInput(
                f"speakers: {len(options.speakers)} names for {files} tracks; give one name per file, in order",
                code="invalid_options",
            )
        if options.track_offsets and len(options.track_offsets) != files:
            raise InvalidInput(
                f"track_offsets: {len(options.track_offsets)} offsets for {files} tracks; give one per file",
                code="invalid_options",
            )
    elif options.track_offsets:
        raise InvalidInput(
            "track_offsets: only for several files (tracks); this job has one", code="invalid_options"
        )


TRANSCRIPTION = JobKind(
    name="transcription",
    queue="transcription",
    input_type=TranscriptionJobOptions,
    result_type=TranscriptionJobResult,
    handler=run_transcription,
    upload=UploadSpec(
        sniff=lambda head, _filename: sniff_audio_format(head),
        sniff_bytes=SNIFF_BYTES,
        max_bytes=lambda settings: settings.transcription_max_upload_bytes,
        formats_hint="WAV, MP3, M4A/AAC, OGG (Opus, Vorbis), WebM, FLAC, MP4 (its audio track)",
        max_files=MAX_SPEAKERS,
        check_files=check_files,
    ),
    text_of=transcript_text,
    release_on_shutdown=True,
    prepare=shared_transcriber,  # the model loads at worker boot; a missing one stops the worker
)
