"""Audio in: the first audio stream of a file (or a mono array) as 16 kHz mono float32 windows.

`AudioReader` decodes a file incrementally with PyAV (resampled to 16 kHz mono float32) and hands out
windows of about ``window_seconds``; `array_windows` cuts an array already in memory the same way. A
window is not cut at a fixed sample: the cut goes to the quietest 100 ms in the window's last third (at
most 30 s), which is a pause between words or sentences in speech, so words are rarely split.

PyAV and numpy are imported lazily: importing this module stays cheap (the API process imports the
package).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from xenios_ai.errors import InvalidInput, LimitExceeded

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Samples = npt.NDArray[np.float32]
    """16 kHz mono float32 samples in [-1, 1]."""

SAMPLE_RATE: Final = 16_000


def unreadable(detail: str) -> InvalidInput:
    return InvalidInput(f"The file has no readable audio: {detail}.", code="unreadable_audio")


def too_long(seconds: float, limit: float) -> LimitExceeded:
    return LimitExceeded(
        f"The audio lasts {seconds / 60:.1f} minutes; the limit is {limit / 60:.1f} minutes.",
        code="audio_too_long",
        extra={"duration_seconds": round(seconds, 1), "max_duration_seconds": limit},
    )


def _is_system_error(exc: BaseException) -> bool:
    """PyAV maps errno to OSError subclasses: a missing or forbidden file is ours, not the user's."""
    return isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError))


def resampled(container: Any, stream: Any, *, format: str, layout: str | None) -> Iterator[Any]:
    """PyAV frames of ``stream`` at 16 kHz in ``format`` and ``layout`` (None: the stream's own), as they
    decode. Corrupt packets are skipped (as faster-whisper does); a decoding failure is 422
    ``unreadable_audio``, a missing or forbidden file stays an OSError."""
    import av  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    resampler: Any = None
    setup: tuple[str, str, int] | None = None
    try:
        for packet in container.demux(stream):
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
                        yield from resampler.resample(None)
                    resampler = av.AudioResampler(
                        format=format, layout=layout or frame.layout.name, rate=SAMPLE_RATE
                    )
                    setup = shape
                yield from resampler.resample(frame)
        if resampler is not None:
            yield from resampler.resample(None)
    except av.error.FFmpegError as exc:
        if _is_system_error(exc):
            raise
        raise unreadable(f"decoding failed ({exc})") from exc


def _search_samples(window: int) -> int:
    """How far back from a window's end a cut may go: its last third, at most 30 s."""
    return int(min(window / SAMPLE_RATE / 3, 30.0) * SAMPLE_RATE)


class AudioReader:
    """The first audio stream of a file as 16 kHz mono float32 windows, decoded incrementally."""

    def __init__(self, path: Path, window_seconds: float, max_seconds: float | None) -> None:
        self.path = path
        self.window = int(window_seconds * SAMPLE_RATE)
        self.search = _search_samples(self.window)
        self.max_samples = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
        self.max_seconds = max_seconds
        self.decoded = 0
        self.expected_seconds: float | None = None
        self._container: Any = None
        self._stream: Any = None

    @property
    def decoded_seconds(self) -> float:
        return self.decoded / SAMPLE_RATE

    def __enter__(self) -> AudioReader:
        import av  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

        try:
            self._container = av.open(str(self.path), metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            if _is_system_error(exc):
                raise
            raise unreadable("not a media file FFmpeg can open") from exc
        try:
            if not self._container.streams.audio:
                raise unreadable("the file has no audio track")
            self._stream = self._container.streams.audio[0]
            self.expected_seconds = self._metadata_seconds() or self._scanned_seconds()
            if self.max_seconds is not None and (self.expected_seconds or 0) > self.max_seconds:
                raise too_long(self.expected_seconds or 0, self.max_seconds)
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
        import av  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

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
        for frame in resampled(self._container, self._stream, format="flt", layout="mono"):
            yield _mono(frame)

    def windows(self) -> Iterator[tuple[int, Samples]]:
        """(offset in samples, samples) of consecutive windows covering the whole stream."""
        import numpy as np  # noqa: PLC0415 - loaded lazily, by workers only

        pending: list[Samples] = []
        pending_samples = 0
        offset = 0
        for chunk in self._chunks():
            pending.append(chunk)
            pending_samples += len(chunk)
            self.decoded += len(chunk)
            if self.max_samples is not None and self.decoded > self.max_samples:
                raise too_long(self.decoded_seconds, self.max_seconds or 0.0)
            if pending_samples >= self.window:
                buffer = np.concatenate(pending)
                cut = quiet_cut(buffer, self.window - self.search, self.window)
                rest = buffer[cut:].copy()
                pending, pending_samples = [rest], len(rest)
                yield offset, buffer[:cut]
                offset += cut
        if self.decoded == 0:
            raise unreadable("the audio track decodes to nothing")
        if pending_samples:
            yield offset, np.concatenate(pending)


def array_windows(samples: Samples, window_seconds: float) -> Iterator[tuple[int, Samples]]:
    """(offset in samples, samples) of consecutive windows of an array in memory, cut as files are."""
    window = int(window_seconds * SAMPLE_RATE)
    search = _search_samples(window)
    offset = 0
    while len(samples) - offset > window:
        cut = quiet_cut(samples[offset : offset + window], window - search, window)
        yield offset, samples[offset : offset + cut]
        offset += cut
    if offset < len(samples):
        yield offset, samples[offset:]


def _mono(frame: Any) -> Samples:
    """A resampled frame (packed float32, one channel) as a flat array."""
    return cast("Samples", frame.to_ndarray()).reshape(-1)


def quiet_cut(samples: Samples, low: int, high: int) -> int:
    """Sample index in [low, high] in the middle of the longest quietest stretch (the latest on ties).

    Quietest means within 1 dB of the lowest 100 ms mean energy in the region; in speech that is a pause.
    """
    import numpy as np  # noqa: PLC0415 - loaded lazily, by workers only

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
