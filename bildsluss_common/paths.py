"""Where each program keeps its state when the configuration does not say."""
from __future__ import annotations

import os
import pathlib


def default_state_dir(*parts: str) -> pathlib.Path:
    """``/var/lib/bildsluss/PARTS`` for root (the packaged services), else
    ``$XDG_STATE_HOME/bildsluss/PARTS`` (``~/.local/state``) for a developer."""
    if os.geteuid() == 0:
        return pathlib.Path("/var/lib/bildsluss", *parts)
    state = os.environ.get("XDG_STATE_HOME") or str(pathlib.Path.home() / ".local" / "state")
    return pathlib.Path(state, "bildsluss", *parts)
