"""The audio side of speaker attribution: a recording's channels (or a track) as separate 16 kHz mono WAV
files, with what is needed to judge them, in one streaming pass.

- `probe`: how many channels the first audio stream has (cheap: the container's header).
- `split`: decode once, write each channel (or the downmix of a track) to a WAV file, and measure each
  channel's level every `FRAME` seconds and how alike the channels are (`Split.copies`: a mono recording
  saved as stereo). Memory: one decoded frame plus ~400 bytes per channel per second of audio.
- `Levels`: the per-frame levels of every source on the common timeline, in dB relative to the source's
  own speech level (its 98th percentile), so a track recorded quieter is not mistaken for cross-talk.
- `mute_cross_talk`: silence, in each source's WAV, the stretches where it only carries another source's
  speech faintly (another source is talking and this one is `GATE_DB` below it). Whisper's VAD then skips
  them, so a two-channel recording costs about what its mono mix costs, and what a headset picked up from
  the other person is not transcribed a second time (`speakers.drop_cross_talk` catches the rest).

PyAV and numpy are imported inside the functions: the API process imports this package, never them.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from xenios_ai.transcription.audio import resampled, too_long, unreadable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Floats = npt.NDArray[np.float32]

SAMPLE_RATE: Final = 16_000
FRAME: Final = 0.02
"""Seconds per level measurement."""
_FRAME_SAMPLES: Final = int(SAMPLE_RATE * FRAME)
SILENT_DB: Final = -70.0
"""A channel whose loudest stretch (98th percentile) is below this (dBFS) carries no sound."""
COPY_CORRELATION: Final = 0.98
"""Channels this correlated (normalised) are copies of one signal: a mono recording saved as stereo."""
GATE_DB: Final = 12.0
"""A source talks in its own right where it is within `TALKING_DB` of its speech level and no more than
this below the loudest other source (relative levels). It is muted where another source talks and it does
not (300 ms hangovers both ways). Bleed through a headset is typically 20-30 dB down; two people talking
at once are within a few dB of their own levels."""
TALKING_DB: Final = -20.0
_SMOOTH_FRAMES: Final = 5  # 100 ms moving mean
_HANGOVER_FRAMES: Final = 15  # talk lasts 300 ms past its loud frames (the gaps between words)
_MIN_MUTE_FRAMES: Final = 15  # shorter quiet stretches stay (300 ms)
_FLOOR_DB: Final = -120.0
PROGRESS_EVERY: Final = 60.0
"""Seconds of audio between two progress calls of `split`."""


def probe(path: Path) -> tuple[int, float | None] | None:
    """(channels, seconds when the header says) of the first audio stream; None when the file cannot be
    opened or has no audio (the transcriber then tells the caller why)."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            seconds = None
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = float(container.duration) / 1_000_000
            return int(stream.codec_context.channels), seconds
    except (av.error.FFmpegError, IndexError, ValueError):
        return None


@dataclass
class Split:
    """A recording written as one WAV per channel (or one, the downmix), with its levels."""

    paths: list[Path]
    power: list[Floats]
    """Mean square per `FRAME`, per WAV."""
    seconds: float
    correlation: list[list[float]] = field(default_factory=list)
    """Normalised correlation of each pair of channels (1 on the diagonal)."""

    @property
    def loudness(self) -> list[float]:
        """The 98th percentile level (dBFS) of each channel's frames."""
        return [_percentile_db(p) for p in self.power]

    @property
    def active(self) -> list[int]:
        """The channels that carry sound."""
        return [i for i, db in enumerate(self.loudness) if db > SILENT_DB]

    @property
    def copies(self) -> bool:
        """Fewer than two channels carry sound, or all that do carry the same signal."""
        active = self.active
        return all(self.correlation[i][j] >= COPY_CORRELATION for i in active for j in active if i < j)


def split(
    path: Path,
    folder: Path,
    *,
    downmix: bool = False,
    max_seconds: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> Split:
    """Decode ``path``'s first audio stream into ``folder``: ``channel-<n>.wav`` per channel, or one
    ``mix.wav`` with ``downmix``. Raises ``InvalidInput(code="unreadable_audio")`` and
    ``LimitExceeded(code="audio_too_long")`` (as soon as ``max_seconds`` is passed). ``progress`` is
    called with the seconds decoded every `PROGRESS_EVERY` seconds of audio (a cancellation checkpoint:
    what it raises propagates)."""
    import av
    import numpy as np

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise unreadable("not a media file FFmpeg can open") from exc
    writers: list[wave.Wave_write] = []
    try:
        if not container.streams.audio:
            raise unreadable("the file has no audio track")
        stream = container.streams.audio[0]
        count = 1 if downmix else max(1, int(stream.codec_context.channels))
        names = ["mix.wav"] if downmix else [f"channel-{i + 1}.wav" for i in range(count)]
        paths = [folder / name for name in names]
        for p in paths:
            w = wave.open(str(p), "wb")  # noqa: SIM115 (closed below, with the others)
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            writers.append(w)
        meter = _Meter(count)
        limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
        reported = 0
        for block in _decoded(container, stream, downmix, count):
            meter.add(block)
            if progress is not None and meter.samples - reported >= PROGRESS_EVERY * SAMPLE_RATE:
                reported = meter.samples
                progress(meter.samples / SAMPLE_RATE)
            if limit is not None and meter.samples > limit:
                raise too_long(meter.samples / SAMPLE_RATE, max_seconds or 0.0)
            pcm = (np.clip(block, -1.0, 1.0) * 32767).astype("<i2")
            for w, channel in zip(writers, pcm, strict=True):
                w.writeframesraw(channel.tobytes())
        if meter.samples == 0:
            raise unreadable("the audio track decodes to nothing")
    finally:
        for w in writers:
            w.close()
        container.close()
    return Split(paths, meter.power(), meter.samples / SAMPLE_RATE, meter.correlation())


def _decoded(container: Any, stream: Any, downmix: bool, count: int) -> Any:
    """(channels, samples) float32 blocks at 16 kHz; corrupt packets are skipped (as the transcriber)."""
    for frame in resampled(container, stream, format="fltp", layout="mono" if downmix else None):
        yield _planar(frame, count)


def _planar(frame: Any, count: int) -> Floats:
    import numpy as np

    block = frame.to_ndarray().astype(np.float32, copy=False)
    if block.shape[0] != count:  # a layout change midstream: fit the channels we write
        block = np.resize(block, (count, block.shape[1]))
    return block  # type: ignore[no-any-return]


class _Meter:
    """Streaming mean square per frame and per channel, and the channels' cross products."""

    def __init__(self, count: int) -> None:
        import numpy as np

        self.count = count
        self.samples = 0
        self._carry = np.zeros((count, 0), dtype=np.float32)
        self._frames: list[Floats] = []
        self._cross = np.zeros((count, count), dtype=np.float64)

    def add(self, block: Floats) -> None:
        import numpy as np

        self.samples += block.shape[1]
        self._cross += block.astype(np.float64) @ block.T.astype(np.float64)
        data = np.concatenate([self._carry, block], axis=1) if self._carry.shape[1] else block
        whole = data.shape[1] // _FRAME_SAMPLES * _FRAME_SAMPLES
        if whole:
            frames = data[:, :whole].reshape(self.count, -1, _FRAME_SAMPLES)
            self._frames.append(np.square(frames, dtype=np.float32).mean(axis=2))
        self._carry = data[:, whole:].copy()

    def power(self) -> list[Floats]:
        import numpy as np

        frames = list(self._frames)
        if self._carry.shape[1]:
            frames.append(np.square(self._carry, dtype=np.float32).mean(axis=1, keepdims=True))
        joined = np.concatenate(frames, axis=1) if frames else np.zeros((self.count, 0), np.float32)
        return [joined[i].copy() for i in range(self.count)]

    def correlation(self) -> list[list[float]]:
        energy = [float(self._cross[i, i]) for i in range(self.count)]
        return [
            [
                1.0 if i == j else float(self._cross[i, j]) / (math.sqrt(energy[i] * energy[j]) or 1.0)
                for j in range(self.count)
            ]
            for i in range(self.count)
        ]


def _db(power: Any) -> Any:
    import numpy as np

    return 10 * np.log10(np.maximum(power, 10 ** (_FLOOR_DB / 10)))


def _percentile_db(power: Floats) -> float:
    import numpy as np

    if len(power) == 0:
        return _FLOOR_DB
    return float(np.percentile(_db(power), 98))


class Levels:
    """Every source's level per `FRAME` on the common timeline (a track starts at its offset), in dB
    relative to the source's own speech level (100 ms smoothed)."""

    def __init__(self, power: list[Floats], offsets: list[float]) -> None:
        import numpy as np

        self.count = len(power)
        self.starts = [round(offset / FRAME) for offset in offsets]
        length = max((s + len(p) for s, p in zip(self.starts, power, strict=True)), default=0)
        kernel = np.ones(_SMOOTH_FRAMES, dtype=np.float32) / _SMOOTH_FRAMES
        self.relative = np.full((self.count, length), _FLOOR_DB, dtype=np.float32)
        for i, (start, p) in enumerate(zip(self.starts, power, strict=True)):
            if len(p) == 0:
                continue
            smooth = np.convolve(p, kernel, mode="same")
            reference = _percentile_db(p)
            self.relative[i, start : start + len(p)] = _db(smooth) - reference

    def over(self, start: float, end: float) -> tuple[float, ...]:
        """Each source's level over [start, end] seconds (power mean of its frames)."""
        import numpy as np

        first = max(0, int(start / FRAME))
        last = max(first + 1, math.ceil(end / FRAME))
        window = self.relative[:, first:last]
        if window.shape[1] == 0:
            return tuple(_FLOOR_DB for _ in range(self.count))
        mean = np.power(10.0, window.astype(np.float64) / 10).mean(axis=1)
        return tuple(round(float(x), 2) for x in _db(mean))

    def cross_talk(self) -> list[Any]:
        """Per source, the frames (on its own file's frame index) where it only carries another's speech."""
        import numpy as np

        masks: list[Any] = []
        rel = self.relative
        talking = rel > TALKING_DB
        for i in range(self.count):
            others = np.delete(rel, i, axis=0)
            if others.shape[0] == 0:
                masks.append(np.zeros(0, dtype=bool))
                continue
            loudest = others.max(axis=0)
            own = talking[i] & (rel[i] >= loudest - GATE_DB)
            someone_else = _dilate(np.delete(talking, i, axis=0).any(axis=0), _HANGOVER_FRAMES)
            mute = someone_else & ~_dilate(own, _HANGOVER_FRAMES)
            start = self.starts[i]
            masks.append(_drop_short(mute, _MIN_MUTE_FRAMES)[start:])
        return masks


def _dilate(mask: Any, frames: int) -> Any:
    """``mask`` widened by ``frames`` on both sides."""
    import numpy as np

    if not mask.any():
        return mask
    kernel = np.ones(2 * frames + 1, dtype=np.int32)
    return np.convolve(mask.astype(np.int32), kernel, mode="same") > 0


def _drop_short(mask: Any, frames: int) -> Any:
    """``mask`` without its runs of True shorter than ``frames``."""
    import numpy as np

    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    out = np.zeros_like(mask)
    for start, stop in zip(edges[0::2], edges[1::2], strict=True):
        if stop - start >= frames:
            out[start:stop] = True
    return out


def mute(path: Path, frames: Any) -> float:
    """Zero the `FRAME`s marked in ``frames`` in the 16-bit mono WAV at ``path``, in place; the seconds
    muted."""
    import numpy as np

    if not frames.any():
        return 0.0
    with wave.open(str(path), "rb") as w:
        count = w.getnframes()
    offset = path.stat().st_size - count * 2
    samples = np.memmap(path, dtype="<i2", mode="r+", offset=offset, shape=(count,))
    try:
        padded = np.concatenate(([False], frames, [False]))
        edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
        for start, stop in zip(edges[0::2], edges[1::2], strict=True):
            samples[start * _FRAME_SAMPLES : stop * _FRAME_SAMPLES] = 0
        samples.flush()
    finally:
        del samples
    return float(frames.sum()) * FRAME
