"""The `Transcriber`: a Whisper model that turns files (or mono arrays) into transcripts, window by window,
one per worker process (`shared_transcriber`).

What it puts together: `audio` (files decoded to 16 kHz mono windows), `model` (the model, resolved
locally, never downloaded; threads), `decoding` (sequential or batched, per file). It owns what holds
across windows: absolute times, the language detected once, progress, and one transcription at a time.
"""

from __future__ import annotations

import gc
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger

from xenios_ai.errors import InvalidInput
from xenios_ai.transcription.audio import SAMPLE_RATE, AudioReader, array_windows
from xenios_ai.transcription.coverage import Account, check
from xenios_ai.transcription.decoding import DecodingPlan, decode, plan
from xenios_ai.transcription.model import BUNDLED_MODEL, choose_threads, load_model
from xenios_ai.transcription.models import (
    SEQUENTIAL,
    Decoding,
    ProgressCallback,
    Segment,
    TranscriptionOptions,
    TranscriptionResult,
    Word,
)
from xenios_ai.transcription.progress import Progress, Turn

if TYPE_CHECKING:
    from xenios_ai.settings import Settings
    from xenios_ai.transcription.audio import Samples

__all__ = ["BUNDLED_MODEL", "SAMPLE_RATE", "Transcriber", "shared_transcriber"]

_AudioReader = AudioReader  # the name tests patch (tests/unit/test_transcription.py)

# --- the transcriber ----------------------------------------------------------------------------------


class Transcriber:
    """One loaded Whisper model; build it once per worker process and call ``transcribe`` per file.

    ``model`` is None for the bundled tiny.en, a local CTranslate2 folder, or a model name already in
    the local Hugging Face cache. Nothing is ever downloaded: a missing model raises
    ``XeniosError(code="model_unavailable")`` here, at startup. ``cpu_threads`` 0 chooses from the machine
    (`model.choose_threads`).

    Defaults, measured with tiny.en int8 on 2 threads (tests/benchmarks/bench_whisper_direct.py):
    ``beam_size=5`` gives 4-8% WER on the test dialogue across formats against 8-11% for greedy (1), and
    greedy sometimes drops the tail of a 30 s chunk; it costs ~1.8x the compute, still ~9-15x real time.
    ``window_seconds=300`` bounds memory: faster-whisper's features take ~0.7 MB per second of window, so
    60 minutes peak at ~690 MB with 300 s windows against ~1 GB with 600 s and ~3.7 GB unwindowed.
    Files of ``batched_min_seconds`` or more are decoded in batches of ``batch_size`` VAD-cut clips
    (`decoding`); shorter ones sequentially. ``batch_size`` 1 never batches.
    Speech a decode leaves out is decoded again and what stays missing is in the result's ``warnings``
    (`coverage`); ``coverage`` states ``speech_seconds`` / ``transcribed_seconds`` in every result (the
    workers' transcriber), not only where speech is missing.

    ``transcribe`` runs one file at a time per Transcriber, so memory stays bounded however many threads
    call it; a waiting call reports progress 0 every second (where a cancel can stop it). For parallel
    transcriptions, run more worker processes: each loads its own model.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        compute_type: str = "int8",
        cpu_threads: int = 0,
        beam_size: int = 5,
        window_seconds: float = 300,
        max_duration_seconds: float | None = 4 * 3600,
        batch_size: int = 4,
        batched_min_seconds: float = 60.0,
        coverage: bool = False,
    ) -> None:
        if window_seconds < 5:
            raise ValueError("window_seconds must be at least 5")
        if beam_size < 1:
            raise ValueError("beam_size must be at least 1")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        threads = choose_threads(cpu_threads)
        started = time.perf_counter()
        self._model: Any
        self._model, self.model_name = load_model(model, compute_type=compute_type, cpu_threads=threads)
        self.cpu_threads = threads
        self.beam_size = beam_size
        self.window_seconds = float(window_seconds)
        self.max_duration_seconds = max_duration_seconds
        self.batch_size = batch_size
        self.batched_min_seconds = float(batched_min_seconds)
        self.coverage = coverage
        self.supported_languages: list[str] = list(self._model.supported_languages)
        self._busy = threading.Lock()
        logger.info(
            "loaded whisper model {} in {:.2f} s ({}, {} threads, beam {}, batches of {} from {:g} s)",
            self.model_name, time.perf_counter() - started, compute_type, threads, beam_size, batch_size,
            self.batched_min_seconds,
        )  # fmt: skip

    def transcribe(
        self,
        path: Path,
        options: TranscriptionOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> TranscriptionResult:
        """Transcribe one audio (or video) file's first audio stream.

        Raises ``InvalidInput(code="unreadable_audio")`` for files without decodable audio,
        ``LimitExceeded(code="audio_too_long")`` past ``max_duration_seconds`` (before decoding when the
        container tells the duration), ``InvalidInput(code="unsupported_language")``; whatever
        ``progress`` raises (``JobCancelled``) propagates unchanged.
        """
        options = options or TranscriptionOptions()
        language = self._language(options.language)
        path = Path(path)
        with (
            self._turn(progress),
            _AudioReader(path, self.window_seconds, self.max_duration_seconds) as reader,
        ):
            result = self._run(reader.windows(), reader, options, language, progress)
        gc.collect()  # PyAV resamplers hold native memory until collected (faster-whisper issue 390)
        self._log(path.name, result)
        return result

    def transcribe_samples(
        self,
        samples: Samples,
        options: TranscriptionOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> TranscriptionResult:
        """Transcribe one 16 kHz mono float32 array (e.g. one channel of a recording) as a file is: in
        windows, batched or not by its length, times in seconds from its start. The caller bounds its
        length (``max_duration_seconds`` applies to files)."""
        options = options or TranscriptionOptions()
        language = self._language(options.language)
        seconds = len(samples) / SAMPLE_RATE
        with self._turn(progress):
            result = self._run(
                array_windows(samples, self.window_seconds), _Known(seconds), options, language, progress
            )
        self._log("samples", result)
        return result

    def _turn(self, progress: ProgressCallback | None) -> Turn:
        return Turn(self._busy, progress)

    def _run(
        self,
        windows: Iterator[tuple[int, Samples]],
        source: _Source,
        options: TranscriptionOptions,
        language: str | None,
        progress: ProgressCallback | None,
    ) -> TranscriptionResult:
        started = time.perf_counter()
        tracker = Progress(progress)
        tracker.total = source.expected_seconds
        segments: list[Segment] = []
        language_probability = 0.0 if language is None else 1.0
        how: DecodingPlan | None = None
        count = 0
        account = Account(english_only=self.supported_languages == ["en"], model=self.model_name)
        for offset, samples in windows:
            count += 1
            window_start = offset / SAMPLE_RATE
            window_end = window_start + len(samples) / SAMPLE_RATE
            if source.expected_seconds is None:
                # Length unknown: assume one more window after what is decoded, so the fraction keeps
                # growing with the file instead of reaching 1 after the first window.
                tracker.total = source.decoded_seconds + self.window_seconds
                tracker.estimated = True
            if how is None:  # once per file: a file unknown in length is as long as its first window
                how = self._plan(options, source.expected_seconds or window_end, language)
            tracker.report(window_start)
            decoded = decode(
                self._model,
                samples,
                how,
                checkpoint=tracker.at(window_start),
                first_batch=1 if count == 1 else None,
            )
            found = []
            for raw in decoded.segments:
                found.append(raw)
                tracker.report(window_start + float(raw.end))
            checked = check(self._model, samples, how, found, decoded.speech)
            account.add(checked, window_start)
            for raw in checked.segments:
                segment = _segment(
                    raw, len(segments), window_start, window_end, segments, options.word_timestamps
                )
                if segment is not None:
                    segments.append(segment)
            info = decoded.info
            if how.language is None and segments and info is not None:
                # Detect once, on the first window with speech, and keep it for the rest of the file.
                language, language_probability = info.language, float(info.language_probability)
                how = _with_language(how, language)
        duration = source.decoded_seconds
        tracker.finish()
        elapsed = time.perf_counter() - started
        return TranscriptionResult(
            text=" ".join(s.text for s in segments),
            segments=segments,
            language=language or "en",
            language_probability=round(language_probability, 4),
            duration=round(duration, 3),
            model=self.model_name,
            real_time_factor=round(elapsed / duration, 4) if duration else 0.0,
            processing_seconds=round(elapsed, 3),
            decoding=_decoding(how, count),
            **_coverage(account, always=self.coverage),
        )

    def _plan(self, options: TranscriptionOptions, seconds: float, language: str | None) -> DecodingPlan:
        return plan(
            options,
            seconds=seconds,
            language=language,
            beam_size=self.beam_size,
            batch_size=self.batch_size,
            batched_min_seconds=self.batched_min_seconds,
        )

    def _log(self, name: str, result: TranscriptionResult) -> None:
        logger.info(
            "transcribed {} ({:.1f} s of audio) in {:.2f} s, rtf {:.3f}, {} segments, {}",
            name, result.duration, result.processing_seconds, result.real_time_factor, len(result.segments),
            result.decoding.mode,
        )  # fmt: skip

    def _language(self, requested: str | None) -> str | None:
        """The language code to pass to Whisper; None means detect (multilingual models only)."""
        multilingual = self.supported_languages != ["en"]
        if requested is None:
            return None if multilingual else "en"
        code = re.split(r"[-_]", requested, maxsplit=1)[0].lower()
        if code not in self.supported_languages:
            raise InvalidInput(
                f"Language {requested!r} is not supported by the transcription model {self.model_name}; "
                f"it supports: {', '.join(self.supported_languages)}.",
                code="unsupported_language",
            )
        return code


def _coverage(account: Account, *, always: bool) -> dict[str, Any]:
    """The result's ``speech_seconds``, ``transcribed_seconds`` (when ``always`` or something is missing)
    and ``warnings``."""
    warnings = account.warnings()
    if not (always or warnings):
        return {}
    return {
        "speech_seconds": account.speech_seconds,
        "transcribed_seconds": account.transcribed_seconds,
        "warnings": warnings,
    }


def _with_language(how: DecodingPlan, language: str) -> DecodingPlan:
    return replace(how, language=language)


def _decoding(how: DecodingPlan | None, windows: int) -> Decoding:
    """The result's `Decoding`; the default instance itself when it is the default (so JSON leaves it out)."""
    if how is None:
        return SEQUENTIAL
    decoding = Decoding(
        mode=how.mode, word_timestamps=how.word_timestamps, batch_size=how.batch_size, windows=max(1, windows)
    )
    return SEQUENTIAL if decoding == SEQUENTIAL else decoding


class _Source(Protocol):
    """What `Transcriber._run` needs of the audio: its length when known, what has been decoded."""

    @property
    def expected_seconds(self) -> float | None: ...

    @property
    def decoded_seconds(self) -> float: ...


class _Known:
    """An array in memory: its length is known and all of it is decoded."""

    def __init__(self, seconds: float) -> None:
        self.expected_seconds = seconds
        self.decoded_seconds = seconds


def _segment(
    raw: Any, index: int, window_start: float, window_end: float, previous: list[Segment], with_words: bool
) -> Segment | None:
    """A faster-whisper segment moved to absolute time, clamped inside its window and after the last one."""
    text = raw.text.strip()
    if not text:
        return None
    floor = previous[-1].start if previous else 0.0
    start = min(max(window_start + float(raw.start), floor, window_start), window_end)
    end = min(max(window_start + float(raw.end), start), window_end)
    words = None
    if with_words and raw.words is not None:
        words = []
        for w in raw.words:
            w_start = min(max(window_start + float(w.start), window_start), window_end)
            w_end = min(max(window_start + float(w.end), w_start), window_end)
            words.append(Word(round(w_start, 3), round(w_end, 3), w.word, round(float(w.probability), 4)))
    return Segment(id=index, start=round(start, 3), end=round(end, 3), text=text, words=words)


# --- one per worker process ---------------------------------------------------------------------------

_shared: dict[tuple[Any, ...], Transcriber] = {}
_shared_lock = threading.Lock()


def shared_transcriber(settings: Settings) -> Transcriber:
    """This process's Transcriber for the WHISPER_* and TRANSCRIPTION_* settings, loaded on first call.

    Workers serving the ``transcription`` queue call it at boot (``JobKind.prepare``), so the model is
    loaded once per process and a missing model stops the worker before it takes a job.
    """
    key = (
        settings.whisper_model,
        settings.whisper_compute_type,
        settings.whisper_threads,
        settings.whisper_beam_size,
        settings.whisper_batch_size,
        settings.transcription_window_seconds,
        settings.transcription_max_seconds,
        settings.transcription_batched_min_seconds,
    )
    with _shared_lock:
        transcriber = _shared.get(key)
        if transcriber is None:
            transcriber = _shared[key] = Transcriber(
                settings.whisper_model,
                compute_type=settings.whisper_compute_type,
                cpu_threads=settings.whisper_threads,
                beam_size=settings.whisper_beam_size,
                window_seconds=settings.transcription_window_seconds,
                max_duration_seconds=settings.transcription_max_seconds,
                batch_size=settings.whisper_batch_size,
                batched_min_seconds=settings.transcription_batched_min_seconds,
                coverage=True,
            )
        return transcriber
