"""What a parser process sends back is data, never code to run in the daemon.

The card's reader processes (:mod:`agent.card.workers`) run as the parser user,
confined (:mod:`agent.card.sandbox`), because a crafted file may take one over.
Their results come back through ``concurrent.futures``, which unpickles them in
the daemon (root): and a pickle can name any function to call with any
arguments (``os.system``). A reader taken over could so have run code as root,
past every wall the sandbox builds.

:func:`guard` makes the pool's result pipe unpickle with :class:`DataUnpickler`,
which builds only plain data: the built-in containers and scalars, paths and
dates, and the classes of our own model that are plain records (dataclasses,
named tuples, enums) or exceptions. Anything else (a function, a module, a
class with behaviour) fails the unpickling; ``concurrent.futures`` then marks
the pool broken, every pending read raises, and the card is not judged
(``INTERNAL_ERROR``): nothing is decided on what a misbehaving parser said.
"""
from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import dataclasses
import enum
import io
import pickle
import sys
from multiprocessing.connection import Connection
from typing import Any

# Modules whose plain records (dataclasses, named tuples, enums, exceptions) a
# parser may send: the card's model and the readers' readings.
_OWN_MODULES = ("agent.card.", "bildsluss_common.")
_BUILTIN_DATA = frozenset({
    "str", "bytes", "bytearray", "int", "float", "complex", "bool", "list", "tuple", "dict", "set",
    "frozenset", "NoneType", "slice", "range",
})
_STDLIB_DATA: dict[str, frozenset[str]] = {
    "pathlib": frozenset({"PurePath", "PurePosixPath", "PosixPath", "Path"}),
    "datetime": frozenset({"datetime", "date", "time", "timedelta", "timezone"}),
    "collections": frozenset({"OrderedDict"}),
    "os": frozenset({"stat_result"}),
    # how concurrent.futures sends a task's result and a raised exception back
    "concurrent.futures.process": frozenset({"_ResultItem", "_rebuild_exc", "_RemoteTraceback"}),
}


class DataUnpickler(pickle.Unpickler):
    """An unpickler that builds data only (see the module notes)."""

    def find_class(self, module: str, name: str) -> Any:
        # Only modules this process has imported already: importing one runs its code.
        loaded = sys.modules.get(module)
        found = getattr(loaded, name, None) if loaded is not None and "." not in name else None
        if module == "builtins" and name in _BUILTIN_DATA:
            return found
        if name in _STDLIB_DATA.get(module, ()):
            return found
        if isinstance(found, type) and issubclass(found, BaseException):
            return found  # an exception a parser raised, of any module: a message, not code
        if module.startswith(_OWN_MODULES) and isinstance(found, type) and _plain_record(found):
            return found
        raise pickle.UnpicklingError(f"a parser process sent {module}.{name}, which is not data")


def _plain_record(cls: type) -> bool:
    return (dataclasses.is_dataclass(cls) or issubclass(cls, (enum.Enum, BaseException))
            or (issubclass(cls, tuple) and hasattr(cls, "_fields")))


def loads(data: bytes | memoryview) -> Any:
    return DataUnpickler(io.BytesIO(data)).load()


class _DataConnection(Connection):
    """The pool's result pipe, unpickling with :class:`DataUnpickler`."""

    def recv(self) -> Any:
        return loads(self.recv_bytes())


def guard(pool: concurrent.futures.ProcessPoolExecutor) -> concurrent.futures.ProcessPoolExecutor:
    """Make ``pool`` unpickle its workers' results as data only. Call it before the
    first ``submit`` (the pool reads results from its first task on)."""
    reader = pool._result_queue._reader  # type: ignore[attr-defined]  # the pipe concurrent.futures reads
    if type(reader) is not Connection:
        raise RuntimeError(f"unexpected result pipe {type(reader).__name__}: cannot guard the parsers' results")
    reader.__class__ = _DataConnection
    return pool

