"""Desktop notifications: tell the person at the PC when a card is done,
refused or held, without them having to look at the status page.

Sent with ``org.freedesktop.Notifications.Notify`` on the D-Bus session bus
(what ``notify-send`` does) through jeepney, a pure-Python D-Bus client: no
libdbus or GLib bindings to build, nothing to spawn per message. Where there
is no session bus (a service without a desktop, a container) notifications
are off, logged once; where the bus has no notification service, each failure
is logged at debug level after the first warning. Neither ever stops the
daemon: notifications are a convenience, the status page is the record.

A daemon running as a system service has no desktop, and a user's session bus
admits only that user: there, ``bildsluss-agent notify-relay`` (:func:`relay`)
runs in the logged-in user's session, follows the daemon's status over the
control socket and shows the same notifications.

:func:`notification_for` (board event -> notification, plain data) decides
what is said; the words are the status page's.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import queue
import threading
from collections.abc import Mapping
from typing import Any

from agent.card.reasons import Reason, staff_message_sv, title_sv
from agent.desk.control import EXIT_FORBIDDEN, ControlError, watch
from agent.desk.status import StatusBoard, held_headline

log = logging.getLogger(__name__)

APP_NAME = "Bildsluss"
SEND_TIMEOUT_S = 2.0
_URGENCY = {"low": 0, "normal": 1, "critical": 2}


@dataclasses.dataclass(frozen=True)
class Notification:
    summary: str
    body: str
    urgency: str = "normal"  # low | normal | critical
    # Milliseconds on screen; 0: until the user closes it (for what must not be missed).
    timeout_ms: int = 10_000


def _reason(code: str | None) -> Reason | None:
    try:
        return Reason(code) if code else None
    except ValueError:
        return None


def notification_for(event: dict[str, Any] | None) -> Notification | None:
    """What to show for one board event; None for events staff need not be told about."""
    if not event:
        return None
    kind = event.get("kind")
    reason = _reason(event.get("reason"))
    if kind == "finished":
        outcome = event.get("outcome")
        if outcome == "archived" and event.get("wiped"):
            files = event.get("files") or 0
            who = f" för {event['patient']}" if event.get("patient") else ""
            return Notification("Klart – kortet är tomt",
                                f"{files} fil{'er' if files != 1 else ''} sparade i arkivet{who}. "
                                "Kortet kan användas för nästa patient.", "normal")
        if outcome == "archived":
            return Notification("Sparat, men kortet är inte tömt – använd inte kortet",
                                staff_message_sv(reason or Reason.WIPE_FAILED), "critical", 0)
        if outcome == "refused":
            title = title_sv(reason) if reason else (event.get("reason") or "okänt skäl")
            body = staff_message_sv(reason) if reason else (event.get("message") or "")
            return Notification(f"Nekat: {title}", body, "critical", 0)
        if outcome == "deferred":
            return Notification(held_headline(reason.value if reason else None),
                                staff_message_sv(reason or Reason.ARCHIVE_UNAVAILABLE), "critical", 0)
        return Notification(f"Fel: {title_sv(reason or Reason.INTERNAL_ERROR)}",
                            staff_message_sv(reason or Reason.INTERNAL_ERROR), "critical", 0)
    if kind == "deferred" and event.get("first", True):
        return Notification(held_headline(reason.value if reason else None),
                            staff_message_sv(reason or Reason.ARCHIVE_UNAVAILABLE), "critical", 0)
    return None


def session_bus_address(environ: Mapping[str, str] | None = None, uid: int | None = None) -> str | None:
    """The session bus to notify on: $DBUS_SESSION_BUS_ADDRESS, else the user's
    /run/user/UID/bus (systemd's per-user bus); None when there is none."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    address = env.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid() if uid is None else uid}"
    bus = pathlib.Path(runtime) / "bus"
    return f"unix:path={bus}" if bus.is_socket() else None


class DesktopSender:
    """Sends one notification at a time over one (re)opened bus connection."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._conn: Any = None

    def send(self, n: Notification) -> int:
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.blocking import open_dbus_connection

        if self._conn is None:
            self._conn = open_dbus_connection(self.address)
        target = DBusAddress("/org/freedesktop/Notifications", bus_name="org.freedesktop.Notifications",
                             interface="org.freedesktop.Notifications")
        message = new_method_call(target, "Notify", "susssasa{sv}i", (
            APP_NAME, 0, "drive-removable-media", n.summary, n.body, [],
            {"urgency": ("y", _URGENCY[n.urgency]), "category": ("s", "device")}, n.timeout_ms))
        try:
            reply = self._conn.send_and_get_reply(message, timeout=SEND_TIMEOUT_S)
        except BaseException:
            self.close()  # a broken connection is reopened for the next message
            raise
        return int(reply.body[0]) if reply.body else 0

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class Announcer:
    """Turns a stream of board snapshots into notifications: each event once,
    never the news that was already there when the stream started."""

    def __init__(self, sender: DesktopSender) -> None:
        self.sender = sender
        self.seen = -1
        self.sent = 0
        self.failed = 0
        self._warned = False

    def start_from(self, snapshot: dict[str, Any]) -> None:
        """The first snapshot of a stream: old news, and the new numbering
        (a restarted daemon counts its events from 1 again)."""
        self.seen = (snapshot.get("event") or {}).get("seq", -1)

    def offer(self, snapshot: dict[str, Any]) -> None:
        event = snapshot.get("event") or {}
        if event.get("seq", -1) <= self.seen:
            return
        self.seen = event["seq"]
        notification = notification_for(event)
        if notification is None:
            return
        try:
            self.sender.send(notification)
            self.sent += 1
        except Exception as exc:  # noqa: BLE001 - a notification must never stop the daemon
            self.failed += 1
            if not self._warned:
                log.warning("desktop notification could not be shown; will keep trying quietly",
                            extra={"error": f"{type(exc).__name__}: {exc}"})
                self._warned = True
            else:
                log.debug("desktop notification failed", extra={"error": str(exc)})


class Notifier:
    """Notifications from inside the daemon, when it runs in a desktop session."""

    def __init__(self, board: StatusBoard, enabled: bool, *, bus_address: str | None = None) -> None:
        self.board = board
        self.enabled = enabled
        self._bus_address = bus_address
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._updates: queue.Queue[dict] | None = None
        self._announcer: Announcer | None = None

    @property
    def sent(self) -> int:
        return self._announcer.sent if self._announcer else 0

    @property
    def failed(self) -> int:
        return self._announcer.failed if self._announcer else 0

    def start(self) -> None:
        if not self.enabled:
            log.info("desktop notifications are off ([daemon] notify = false)")
            return
        address = self._bus_address or session_bus_address()
        if address is None:
            log.info("no D-Bus session bus; desktop notifications are off")
            return
        self._stop.clear()
        self._updates = self.board.subscribe()
        self._announcer = Announcer(DesktopSender(address))
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()
        log.info("desktop notifications on", extra={"bus": address})

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=SEND_TIMEOUT_S + 2)
            self._thread = None
        if self._updates is not None:
            self.board.unsubscribe(self._updates)
            self._updates = None

    def _run(self) -> None:
        assert self._updates is not None and self._announcer is not None
        try:
            self._announcer.start_from(self._updates.get_nowait())  # the state at subscription
        except queue.Empty:
            pass
        while not self._stop.is_set():
            try:
                snapshot = self._updates.get(timeout=0.5)
            except queue.Empty:
                continue
            self._announcer.offer(snapshot)
        self._announcer.sender.close()


def relay(socket_path: pathlib.Path, bus_address: str, stop: threading.Event, *,
          retry_s: float = 2.0, sender: DesktopSender | None = None) -> Announcer:
    """``bildsluss-agent notify-relay``: the notifications of a daemon that runs
    as a system service (no desktop, and the session bus admits only its own
    user) shown in the logged-in user's session. Follows the daemon's status
    over the control socket (``subscribe``) and waits for it when it is not
    running (yet). Returns when ``stop`` is set; ControlError(EXIT_FORBIDDEN)
    when this user may not use the socket."""
    announcer = Announcer(sender or DesktopSender(bus_address))
    waiting = False
    try:
        while not stop.is_set():
            try:
                first = True
                for snapshot in watch(socket_path, stop):
                    if first:
                        announcer.start_from(snapshot)
                        log.info("notification relay following the agent", extra={"socket": str(socket_path)})
                        first, waiting = False, False
                    else:
                        announcer.offer(snapshot)
            except ControlError as exc:
                if exc.exit_code == EXIT_FORBIDDEN:
                    raise
                if not waiting:
                    log.info("waiting for the agent", extra={"socket": str(socket_path)})
                    waiting = True
            stop.wait(retry_s)
    finally:
        announcer.sender.close()
    return announcer
