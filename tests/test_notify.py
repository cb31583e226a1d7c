"""Desktop notifications: what is said (plain data), the no-bus path, and real
Notify calls on a real D-Bus session bus (a private dbus-daemon) received by a
notification service of the test's own."""
from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time

import pytest

from agent.desk.notify import Notification, Notifier, notification_for, session_bus_address
from agent.card.reasons import STAFF_MESSAGES_SV, Reason
from agent.desk.status import StatusBoard


def outcome(kind: str, reason: str | None = None, wiped: bool = True) -> dict:
    return {"outcome": kind, "reason": reason, "message": "m", "patient": "191212121212", "case_id": None,
            "wiped": wiped and kind == "archived", "files": [{"status": "archived"}] * 2}


# -- what is said ----------------------------------------------------------------------


def event_of(action) -> dict:
    board = StatusBoard("pc-1", "0.1.0", None)
    board.card_detected("sdb1", "usb-1", "udev")
    action(board)
    return board.snapshot()["event"]


def test_archived_card_says_done_card_empty_with_masked_patient():
    n = notification_for(event_of(lambda b: b.card_finished("sdb1", outcome("archived"))))
    assert n.summary == "Klart – kortet är tomt" and n.urgency == "normal"
    assert "2 filer" in n.body and "19121212-****" in n.body and "191212121212" not in n.body


def test_refused_card_says_why_and_stays_until_closed():
    n = notification_for(event_of(lambda b: b.card_finished("sdb1", outcome("refused", "NO_ID_FOUND"))))
    assert n == Notification("Nekat: inget personnummer hittades", STAFF_MESSAGES_SV[Reason.NO_ID_FOUND],
                             "critical", 0)


def test_deferred_card_warns_once_not_at_every_retry():
    board = StatusBoard("pc-1", "0.1.0", None)
    board.card_detected("sdb1", "usb-1", "udev")
    board.card_deferred("sdb1", "ARCHIVE_UNAVAILABLE", "m", retry_at=0)
    n = notification_for(board.snapshot()["event"])
    assert n.summary == "Arkivet nås inte – använd inte kortet" and n.urgency == "critical"
    board.card_deferred("sdb1", "ARCHIVE_UNAVAILABLE", "m", retry_at=10)
    assert notification_for(board.snapshot()["event"]) is None


@pytest.mark.parametrize("action, summary", [
    (lambda b: b.card_finished("sdb1", outcome("archived", "WIPE_FAILED", wiped=False)),
     "Sparat, men kortet är inte tömt – använd inte kortet"),
    (lambda b: b.card_finished("sdb1", outcome("failed", "INTERNAL_ERROR")), "Fel: fel i importprogrammet"),
    (lambda b: b.card_finished("sdb1", outcome("refused", "A_CODE_FROM_THE_FUTURE")), "Nekat: A_CODE_FROM_THE_FUTURE"),
])
def test_other_outcomes(action, summary):
    assert notification_for(event_of(action)).summary == summary


@pytest.mark.parametrize("action", [
    lambda b: None,
    lambda b: b.card_state("sdb1", "uploading"),
    lambda b: b.progress("sdb1", "upload", {"files_done": 1}),
    lambda b: b.archive_reachable(False, "down"),
])
def test_work_in_progress_is_not_announced(action):
    assert notification_for(event_of(action)) is None


# -- no bus ----------------------------------------------------------------------------------


def test_session_bus_address(tmp_path):
    assert session_bus_address({"DBUS_SESSION_BUS_ADDRESS": "unix:path=/x"}) == "unix:path=/x"
    assert session_bus_address({"XDG_RUNTIME_DIR": str(tmp_path)}) is None
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "bus"))
        assert session_bus_address({"XDG_RUNTIME_DIR": str(tmp_path)}) == f"unix:path={tmp_path / 'bus'}"


def test_without_a_session_bus_notifications_are_off_and_said_so_once(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    board = StatusBoard("pc-1", "0.1.0", None)
    notifier = Notifier(board, enabled=True)
    with caplog.at_level(logging.INFO, logger="agent.desk.notify"):
        notifier.start()
        board.card_detected("sdb1", "usb-1", "udev")
        board.card_finished("sdb1", outcome("refused", "NO_ID_FOUND"))
        notifier.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["no D-Bus session bus; desktop notifications are off"]
    assert board._subscribers == [], "nothing listens to the board"
    assert notifier.sent == 0 and notifier.failed == 0


def test_turned_off_in_the_config():
    board = StatusBoard("pc-1", "0.1.0", None)
    notifier = Notifier(board, enabled=False, bus_address="unix:path=/nonexistent")
    notifier.start()
    assert board._subscribers == []
    notifier.stop()


# -- a real bus --------------------------------------------------------------------------------


@pytest.fixture
def session_bus(tmp_path):
    daemon = shutil.which("dbus-daemon")
    assert daemon, "dbus-daemon is installed by scripts/setup.sh (Debian package dbus-daemon)"
    address = f"unix:path={tmp_path / 'bus'}"
    proc = subprocess.Popen([daemon, "--session", "--nofork", "--nopidfile", f"--address={address}",
                             "--print-address=1"], stdout=subprocess.PIPE, text=True)
    printed = proc.stdout.readline().strip()
    assert printed.startswith("unix:path="), printed
    yield address
    proc.terminate()
    proc.wait(timeout=10)


class NotificationService:
    """org.freedesktop.Notifications as a desktop provides it, recording each Notify."""

    def __init__(self, address: str) -> None:
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.blocking import open_dbus_connection

        self.conn = open_dbus_connection(address)
        bus = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                          interface="org.freedesktop.DBus")
        reply = self.conn.send_and_get_reply(
            new_method_call(bus, "RequestName", "su", ("org.freedesktop.Notifications", 4)), timeout=5)
        assert reply.body == (1,), "we own the name"
        self.received: list[tuple] = []
        self.arrived = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        from jeepney import MessageType, new_method_return

        while not self._stop:
            try:
                msg = self.conn.receive(timeout=0.2)
            except TimeoutError:
                continue
            if msg.header.message_type is MessageType.method_call and msg.header.fields.get(3) == "Notify":
                self.received.append(msg.body)
                self.conn.send(new_method_return(msg, "u", (len(self.received),)))
                self.arrived.set()

    def wait_for(self, count: int) -> list[tuple]:
        while len(self.received) < count:
            self.arrived.clear()
            assert self.arrived.wait(timeout=30), f"only {len(self.received)} notification(s) arrived"
        return self.received

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        self.conn.close()


def test_notifications_arrive_on_the_session_bus(session_bus):
    service = NotificationService(session_bus)
    board = StatusBoard("pc-1", "0.1.0", None)
    board.card_detected("old", "usb-1", "udev")
    board.card_finished("old", outcome("refused", "MIXED_PATIENTS"))  # before the notifier: old news
    notifier = Notifier(board, enabled=True, bus_address=session_bus)
    notifier.start()
    try:
        board.card_detected("sdb1", "usb-1", "udev")
        board.card_state("sdb1", "uploading")
        board.card_finished("sdb1", outcome("archived"))
        board.card_detected("sdb2", "usb-1", "udev")
        board.card_finished("sdb2", outcome("refused", "EXPECTED_PATIENT_MISMATCH"))
        first, second = service.wait_for(2)
    finally:
        notifier.stop()
        service.close()
    app, replaces, icon, summary, body, actions, hints, timeout = first
    assert (app, summary, hints["urgency"]) == ("Bildsluss", "Klart – kortet är tomt", ("y", 1))
    assert "191212121212" not in body and "19121212-****" in body
    assert second[3] == "Nekat: fel patient" and second[6]["urgency"] == ("y", 2) and second[7] == 0
    assert len(service.received) == 2 and notifier.sent == 2


def test_a_bus_without_a_notification_service_never_stops_the_daemon(session_bus, caplog):
    board = StatusBoard("pc-1", "0.1.0", None)
    notifier = Notifier(board, enabled=True, bus_address=session_bus)
    with caplog.at_level(logging.WARNING, logger="agent.desk.notify"):
        notifier.start()
        for key in ("a", "b"):
            board.card_detected(key, "usb-1", "udev")
            board.card_finished(key, outcome("refused", "NO_ID_FOUND"))
        deadline = time.monotonic() + 30
        while notifier.failed < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        notifier.stop()
    assert notifier.failed == 2 and notifier.sent == 0
    assert [r.getMessage() for r in caplog.records].count(
        "desktop notification could not be shown; will keep trying quietly") == 1


# -- the relay for a daemon that runs as a system service -----------------------------------------


def test_the_relay_shows_a_system_daemons_notifications_in_the_session(session_bus, tmp_path):
    from agent.desk.control import ControlServer
    from agent.desk.ehr_context import ContextStore
    from agent.desk.notify import relay

    service = NotificationService(session_bus)
    board = StatusBoard("pc-1", "0.1.0", None)
    board.card_detected("old", "usb-1", "udev")
    board.card_finished("old", outcome("refused", "MIXED_PATIENTS"))  # before the relay: old news
    sock = tmp_path / "run" / "control.sock"
    stop = threading.Event()
    result: dict = {}
    # The relay starts first (login before the service is up) and waits for the daemon.
    thread = threading.Thread(target=lambda: result.update(
        announcer=relay(sock, session_bus, stop, retry_s=0.1)), daemon=True)
    thread.start()
    server = ControlServer(sock, board, ContextStore(), allowed_gid=None, context_ttl_s=60)
    server.start()
    try:
        deadline = time.monotonic() + 30
        while not board._subscribers and time.monotonic() < deadline:  # the relay has connected
            time.sleep(0.02)
        board.card_detected("sdb1", "usb-1", "udev")
        board.card_finished("sdb1", outcome("refused", "UNREGISTERED_DEVICE"))
        (only,) = service.wait_for(1)
        assert only[3] == "Nekat: okänd kamera eller telefon"
        # the daemon restarts: its events count from 1 again, and the relay follows
        server.stop()
        board = StatusBoard("pc-1", "0.1.0", None)
        server = ControlServer(sock, board, ContextStore(), allowed_gid=None, context_ttl_s=60)
        server.start()
        deadline = time.monotonic() + 30
        while not board._subscribers and time.monotonic() < deadline:
            time.sleep(0.02)
        board.card_detected("sdc1", "usb-1", "udev")
        board.card_finished("sdc1", outcome("archived"))
        assert service.wait_for(2)[1][3] == "Klart – kortet är tomt"
    finally:
        stop.set()
        thread.join(timeout=10)
        server.stop()
        service.close()
    assert result["announcer"].sent == 2


def test_the_relay_gives_up_when_this_user_may_not_use_the_socket(tmp_path):
    from agent.desk.control import EXIT_FORBIDDEN, ControlError, ControlServer
    from agent.desk.ehr_context import ContextStore
    from agent.desk.notify import relay

    class Closed(ControlServer):
        def allowed(self, conn, uid, gid):
            return False

    sock = tmp_path / "control.sock"
    server = Closed(sock, StatusBoard("pc-1", "0", None), ContextStore(), allowed_gid=None, context_ttl_s=60)
    server.start()
    try:
        with pytest.raises(ControlError) as err:
            relay(sock, "unix:path=/nonexistent", threading.Event(), retry_s=0.1)
    finally:
        server.stop()
    assert err.value.exit_code == EXIT_FORBIDDEN
