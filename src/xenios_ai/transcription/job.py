"""The transcription kind (`TRANSCRIPTION`): transcribe the upload with the worker process's one
`Transcriber` (loaded at worker boot), then submit the ``then`` analyses on the transcript."""

from __future__ import annotations

import msgspec

from xenios_ai.jobs.context import JobContext
from xenios_ai.jobs.followups import analyse_after
from xenios_ai.jobs.models import JobKind, UploadSpec
from xenios_ai.transcription.engine import shared_transcriber
from xenios_ai.transcription.models import TranscriptionJobOptions, TranscriptionJobResult, transcript_text
from xenios_ai.transcription.sniff import SNIFF_BYTES, sniff_audio_format


def run_transcription(ctx: JobContext, options: TranscriptionJobOptions) -> TranscriptionJobResult:
    """The transcription job's handler (on the worker's actor thread)."""
    with ctx.upload_file() as path:
        result = shared_transcriber(ctx.settings).transcribe(path, options, progress=ctx.progress_sync)
    follow_ups = analyse_after(
        ctx, options.then, has_text=bool(result.text), nothing="the transcript is empty: nothing to analyse"
    )
    return TranscriptionJobResult(**msgspec.structs.asdict(result), follow_ups=follow_ups)


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
    ),
    text_of=transcript_text,
    release_on_shutdown=True,
    prepare=shared_transcriber,  # the model loads at worker boot; a missing one stops the worker
)
