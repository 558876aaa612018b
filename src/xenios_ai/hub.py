"""Nothing in a worker may wait on the Hugging Face hub (DESIGN.md section 6): one place sets its
offline mode, for the worker entry point and both engines."""

from __future__ import annotations

import os
import sys


def hub_offline(*, force: bool = False) -> None:
    """Set HF_HUB_OFFLINE=1 unless the environment says otherwise; ``force``: set it regardless, also in
    an already imported huggingface_hub (it reads the variable at import, checks the constant per call)."""
    if not force:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
