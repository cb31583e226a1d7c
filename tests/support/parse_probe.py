"""What a confined card reader may do, run inside one (tests/test_system_parse_user.py).

A module of its own that imports only what every reader worker has already
imported: a worker started by a fork server imports the module of the function
it is given, after it was confined, and as the parser user it may not read a
Python installation under root's 0700 home (a developer's or CI's pyenv), so
importing the test module (pytest, pygments, ...) there fails.
"""
from __future__ import annotations

import os
import pathlib


def attempt(action) -> str:
    """"ok", or the name of the OSError the confinement answered ``action`` with."""
    try:
        action()
    except OSError as exc:
        return type(exc).__name__
    return "ok"


def probe(paths: dict[str, str]) -> dict[str, object]:
    """What a reader worker may do (runs inside it)."""
    p = {k: pathlib.Path(v) for k, v in paths.items()}
    return {
        "uid": os.geteuid(), "groups": os.getgroups(),
        "read card": attempt(lambda: next(p["card"].rglob("*.JPG")).read_bytes()),
        "write card": attempt(lambda: (p["card"] / "planted.JPG").write_bytes(b"x")),
        "read beside the card": attempt(lambda: p["secret"].read_bytes()),
        "read world-readable beside the card": attempt(lambda: p["open"].read_bytes()),
        "list the state folder": attempt(lambda: list(p["state"].iterdir())),
        "read the journal": attempt(lambda: p["journal"].read_bytes()),
        "write its folder": attempt(lambda: (p["scratch"] / "tmp").write_bytes(b"x")),
        "write beside its folder": attempt(lambda: (p["spool"] / "swapped.jpg").write_bytes(b"x")),
        "list the spool folder": attempt(lambda: list(p["spool"].iterdir())),
    }
