"""The audio container of an upload from its first bytes: magic numbers only, nothing imported (the API
process sniffs uploads)."""

from __future__ import annotations

from typing import Final

from xenios_ai.errors import UnsupportedMediaType

#: How many leading bytes ``sniff_audio_format`` needs to decide.
SNIFF_BYTES: Final = 64
#: What ``sniff_audio_format`` can answer.
SUPPORTED_FORMATS: Final = ("wav", "mp3", "m4a", "mp4", "aac", "ogg", "webm", "mkv", "flac")

_M4A_BRANDS: Final = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})
_OGG_AUDIO_CODECS: Final = (b"OpusHead", b"\x01vorbis", b"\x7fFLAC", b"Speex   ")
#: ISO BMFF brands of still images and image sequences (HEIF/HEIC, AVIF, Canon raw): an ``ftyp`` box with
#: one of them as major brand, or with a HEIF structural brand (mif1, msf1, miaf) among its compatible
#: ones, is a picture, not audio or video.
_HEIF_STRUCTURAL_BRANDS: Final = frozenset({b"mif1", b"mif2", b"msf1", b"miaf"})
_IMAGE_BRANDS: Final = _HEIF_STRUCTURAL_BRANDS | frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"avif", b"avis", b"avio", b"crx "}
)


def sniff_audio_format(head: bytes) -> str | None:
    """Name the audio container from a file's first ``SNIFF_BYTES`` bytes, or None if it is not one we take.

    Answers from magic numbers only, so it is cheap and safe on any upload. An MP4 is accepted on its
    ``ftyp`` box even though it may hold no audio track (the transcriber rejects that later), unless its
    brands say it is an image (HEIC, AVIF).
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg" if _ogg_first_packet_is_audio(head) else None
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:SNIFF_BYTES] else "mkv"
    if head[4:8] == b"ftyp":
        if _is_image_ftyp(head):
            return None
        return "m4a" if head[8:12] in _M4A_BRANDS else "mp4"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 4 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:  # ADTS: 12 sync bits, then layer 00
            return "aac"
        if _is_mpeg_audio_frame(head):
            return "mp3"
    return None


def require_audio_format(head: bytes) -> str:
    """``sniff_audio_format``, raising ``UnsupportedMediaType(code="unsupported_format")`` on None."""
    kind = sniff_audio_format(head)
    if kind is None:
        raise UnsupportedMediaType(
            f"Not a supported audio file; send one of: {', '.join(SUPPORTED_FORMATS)}.",
            code="unsupported_format",
        )
    return kind


def _is_mpeg_audio_frame(head: bytes) -> bool:
    """An MPEG-1/2/2.5 audio frame header: 11 sync bits and no reserved version, layer, rate."""
    return (
        head[1] & 0xE0 == 0xE0
        and (head[1] >> 3) & 3 != 1
        and (head[1] >> 1) & 3 != 0
        and head[2] >> 4 != 0xF
        and (head[2] >> 2) & 3 != 3
    )


def _is_image_ftyp(head: bytes) -> bool:
    """An ``ftyp`` box (size, "ftyp", major brand, minor version, compatible brands) naming an image."""
    if head[8:12] in _IMAGE_BRANDS:
        return True
    size = int.from_bytes(head[:4], "big")
    end = min(size, len(head)) if size >= 16 else len(head)
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    return bool(compatible & _HEIF_STRUCTURAL_BRANDS)


def _ogg_first_packet_is_audio(head: bytes) -> bool:
    """True unless the first Ogg page visibly starts a non-audio codec (Theora video, say)."""
    if len(head) < 27:
        return True
    start = 27 + head[26]  # page header, then one lacing byte per segment
    packet = head[start : start + 8]
    if len(packet) < 8:
        return True
    return any(packet.startswith(magic) for magic in _OGG_AUDIO_CODECS)
