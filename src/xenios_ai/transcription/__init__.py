"""Speech to text with faster-whisper, in bounded memory.

``sniff_audio_format`` is for the API process: it reads a few bytes and imports nothing heavy. The
``Transcriber`` is built once per worker process; it imports faster-whisper, PyAV and numpy lazily, so
importing this module stays cheap and the API never loads them.

Long audio is decoded incrementally with PyAV (resampled to 16 kHz mono float32) and transcribed one
window of ``window_seconds`` at a time, so memory depends on the window, not on the file. A window is not
cut at a fixed sample: the cut goes to the quietest 100 ms in the window's last third (at most 30 s),
which is a pause between words or sentences in speech, so words are rarely split. This costs one energy
pass over that stretch; overlapping windows would need de-duplicating text and double the work there.

- `sniff`: the container from the bytes (`sniff_audio_format`); the API uses it.
- `models`: `TranscriptionOptions` in, `TranscriptionResult` out (with `Decoding`: how it was decoded),
  the job's input and result.
- `audio`: files (`AudioReader`) and arrays (`array_windows`) as 16 kHz mono float32 windows.
- `model`: the Whisper model resolved locally and loaded; threads chosen from the machine.
- `decoding`: one mono array decoded sequentially or in batches of VAD-cut clips (`plan`, `decode`).
- `engine`: the `Transcriber` (``transcribe`` a file, ``transcribe_samples`` one mono array: windows,
  absolute times, language, progress, one at a time), and `shared_transcriber`, the worker process's one.

For the job system: ``shared_transcriber(settings)`` is the worker process's one Transcriber (loaded at
worker boot), ``TranscriptionJobOptions`` adds ``then`` (analyses to run on the transcript) to the
options, and ``TranscriptionJobResult`` adds the follow-up jobs to the result.
"""

from xenios_ai.transcription.engine import Transcriber, shared_transcriber
from xenios_ai.transcription.models import (
    Decoding,
    ProgressCallback,
    Segment,
    TranscriptionJobOptions,
    TranscriptionJobResult,
    TranscriptionOptions,
    TranscriptionResult,
    Word,
    transcript_text,
)
from xenios_ai.transcription.sniff import (
    SNIFF_BYTES,
    SUPPORTED_FORMATS,
    require_audio_format,
    sniff_audio_format,
)

__all__ = [
    "SNIFF_BYTES",
    "SUPPORTED_FORMATS",
    "Decoding",
    "ProgressCallback",
    "Segment",
    "Transcriber",
    "TranscriptionJobOptions",
    "TranscriptionJobResult",
    "TranscriptionOptions",
    "TranscriptionResult",
    "Word",
    "require_audio_format",
    "shared_transcriber",
    "sniff_audio_format",
    "transcript_text",
]
