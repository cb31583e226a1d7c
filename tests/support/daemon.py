"""A real ``bildsluss-agent run`` process for the daemon tests, and ways to watch it.

The daemon gets its own config file (short timeouts and backoff so faults play
out in seconds), its own state, spool, mount root and control socket below the
test's tmp folder, and logs JSON lines to a file the test can show on failure.
What it did is read back from its journal (SQLite, opened read-only) and from
the archive (``bildsluss-archive cases --json``).
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.support.e2e import AGENT, DEPARTMENT

KILLED = -signal.SIGKILL


class DaemonProcess:
    def __init__(self, base: pathlib.Path, archive_address: str, *, watch: pathlib.Path | None = None,
                 loop_backing_dir: pathlib.Path | None = None, extra_daemon: str = "",
                 extra_agent: str = "", name: str = "daemon") -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.watch = watch
        self.state_dir = base / "state"
        self.kill_file = base / "kill-at"
        self.pause_file = base / "pause-at"
        self.socket = base / "run" / "control.sock"
        self.mount_root = base / "run" / "cards"
        self.log_path = base / f"{name}.log"
        self.config_path = base / "agent.toml"
        backing = f'loop_backing_dir = "{loop_backing_dir}"\nallow_loop = true\n' if loop_backing_dir else ""
        self.config_path.write_text(f"""
[agent]
id = "daemon-test-agent"
department = "{DEPARTMENT}"
spool_dir = "{base / 'spool'}"
{extra_agent}
[archive]
address = "{archive_address}"
insecure = true
connect_timeout_s = 1.0
retry_budget_s = 1.0
call_timeout_s = 5.0

[daemon]
state_dir = "{self.state_dir}"
mount_root = "{self.mount_root}"
control_socket = "{self.socket}"
status_http = ""
heartbeat_s = 0.5
retry_initial_s = 0.5
retry_max_s = 1.0
notify = false
settle_s = 0.3
{backing}{extra_daemon}
""")
        self.proc: subprocess.Popen | None = None

    # -- process -----------------------------------------------------------------

    def start(self, *, kill_at: str | None = None, pause_at: str | None = None,
              env_override: dict[str, str] | None = None) -> "DaemonProcess":
        for path, point in ((self.kill_file, kill_at), (self.pause_file, pause_at)):
            if point:
                path.write_text(point)
            else:
                path.unlink(missing_ok=True)
        backend = ["--watch", str(self.watch)] if self.watch else ["--udev"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "BILDSLUSS_TEST_KILL_FILE": str(self.kill_file),
               "BILDSLUSS_TEST_PAUSE_FILE": str(self.pause_file)}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)  # not the test runner's systemd
        env.update(env_override or {})
        self._log = open(self.log_path, "ab")
        # Its own process group: what a killed daemon leaves (its exiftool) is ended with it.
        self.proc = subprocess.Popen(
            [*AGENT, "run", "--config", str(self.config_path), *backend],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        return self

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # the daemon prints every thread's stack
            time.sleep(0.5)
            raise AssertionError(f"daemon did not exit within {timeout} s\n{self.log_tail(80)}") from None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of a killed daemon
        except ProcessLookupError:
            pass
        self.proc = None
        return code

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- what it did -------------------------------------------------------------

    def cards(self) -> list[dict]:
        path = self.state_dir / "journal.sqlite3"
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM cards ORDER BY id")]
        except sqlite3.OperationalError:
            return []  # the schema is not there yet
        finally:
            db.close()

    def history(self, card_id: int) -> list[str]:
        db = sqlite3.connect(f"file:{self.state_dir / 'journal.sqlite3'}?mode=ro", uri=True, timeout=5)
        try:
            return [r[0] for r in db.execute(
                "SELECT state FROM transitions WHERE card_id = ? ORDER BY rowid", (card_id,))]
        finally:
            db.close()

    def wait_for(self, what: str, predicate: Callable[[list[dict]], bool], timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cards = self.cards()
            if predicate(cards):
                return cards
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) while waiting for {what}\n{self.log_tail()}")
            time.sleep(0.1)
        if self.alive():
            self.proc.send_signal(signal.SIGUSR1)  # the daemon prints every thread's stack
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; journal: {self.cards()}\n{self.log_tail(80)}")

    def wait_paused(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pause_file.exists() and self.pause_file.read_text().startswith("paused:"):
                return
            if not self.alive():
                raise AssertionError(f"daemon exited before pausing\n{self.log_tail()}")
            time.sleep(0.05)
        raise AssertionError(f"daemon did not pause\n{self.log_tail()}")

    def resume(self) -> None:
        self.pause_file.unlink()

    def wait_for_log(self, message: str, timeout: float = 30, **fields: object) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if line.get("msg") == message and all(
                        v(line.get(k)) if callable(v) else line.get(k) == v for k, v in fields.items()):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line {message!r}\n{self.log_tail()}")

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def log_tail(self, n: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


@pytest.fixture
def daemons():
    """Make DaemonProcess objects; every one still running is stopped when the test ends."""
    made: list[DaemonProcess] = []

    def make(*args, **kwargs) -> DaemonProcess:
        made.append(DaemonProcess(*args, **kwargs))
        return made[-1]

    yield make
    for daemon in made:
        daemon.stop()


def states(cards: list[dict]) -> list[str]:
    return [c["state"] for c in cards]


def media_count(case: dict) -> int:
    """How many media items a ``cases --json`` line lists (``media`` is their number)."""
    media = case["media"]
    assert isinstance(media, int) and media == len(case["media_items"]), case
    return media
