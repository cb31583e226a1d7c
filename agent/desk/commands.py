"""``bildsluss-agent expect``, ``status`` and ``notify-relay``: the commands that
talk to the running daemon over its control socket (:mod:`agent.desk.control`).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import threading
import time
from typing import Any

from agent.card.model import Mode
from agent.desk.control import EXIT_OK, EXIT_USAGE, ControlError, ask, parse_duration
from agent.desk.status import staff_view


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``expect`` and ``status`` to ``bildsluss-agent``; each sets ``handler``."""
    p = subparsers.add_parser("expect", help="hand the patient open in the EHR to the running agent (R5)")
    p.add_argument("patient", metavar="ID", help="personnummer, samordningsnummer or reservnummer")
    p.add_argument("--mode", choices=[m.value for m in Mode], help="capture mode of the next card")
    p.add_argument("--ttl", help="how long the context stays valid: 90s, 10m, 1h (default from config)")
    _socket_options(p)
    p.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    p.set_defaults(handler=cmd_expect)

    p = subparsers.add_parser("status", help="what the running agent is doing, for staff and ops")
    _socket_options(p)
    p.add_argument("--json", action="store_true", help="print the status snapshot as one JSON object")
    p.set_defaults(handler=cmd_status)

    p = subparsers.add_parser("notify-relay", help="show the agent's desktop notifications in this session "
                                                   "(run in the logged-in user's desktop session)")
    _socket_options(p)
    p.set_defaults(handler=cmd_notify_relay)


def _socket_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", type=pathlib.Path, metavar="P",
                   help="the daemon's control socket (default: the one --config or /etc/bildsluss/agent.toml "
                        "names, else /run/bildsluss/control.sock)")
    p.add_argument("--config", type=pathlib.Path, metavar="F", help="agent TOML config file")


def _socket_path(args: argparse.Namespace) -> pathlib.Path:
    if args.socket:
        return args.socket
    from agent import config as config_mod

    return config_mod.client_control_socket(args.config)


def _fail(message: str, code: int) -> int:
    print(f"bildsluss-agent: {message}", file=sys.stderr)
    return code


def cmd_expect(args: argparse.Namespace) -> int:
    from agent.config import ConfigError

    ttl = None
    if args.ttl:
        try:
            ttl = parse_duration(args.ttl)
        except ValueError as exc:
            return _fail(f"--ttl: {exc}", EXIT_USAGE)
    try:
        answer = ask(_socket_path(args), {"op": "expect", "patient": args.patient, "mode": args.mode,
                                          "ttl_s": ttl})
    except ConfigError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)
    except ControlError as exc:
        return _fail(str(exc), exc.exit_code)
    if args.json:
        print(json.dumps(answer, ensure_ascii=False))
    if not answer.get("ok"):
        if not args.json:
            print(f"bildsluss-agent: not accepted: {answer.get('message')}", file=sys.stderr)
        return EXIT_USAGE
    if not args.json:
        until = time.strftime("%H:%M:%S", time.localtime(answer["expires_at"]))
        mode = f", mode {answer['mode']}" if answer.get("mode") else ""
        print(f"expecting patient {answer['patient']}{mode} for the next card, until {until}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from agent.config import ConfigError

    try:
        answer = ask(_socket_path(args), {"op": "status"})
    except ConfigError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)
    except ControlError as exc:
        return _fail(str(exc), exc.exit_code)
    if not answer.get("ok"):
        return _fail(f"the agent answered: {answer.get('message')}", 1)
    if args.json:
        print(json.dumps({**answer["status"], "context": answer.get("context")}, ensure_ascii=False))
    else:
        print(format_status(answer["status"], answer.get("context")))
    return EXIT_OK


def cmd_notify_relay(args: argparse.Namespace) -> int:
    from agent.config import ConfigError
    from agent.desk.notify import relay, session_bus_address

    try:
        path = _socket_path(args)
    except ConfigError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)
    bus = session_bus_address()
    if bus is None:
        return _fail("no D-Bus session bus: run notify-relay inside a desktop session", EXIT_USAGE)
    try:
        relay(path, bus, threading.Event())
    except ControlError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def format_status(snapshot: dict[str, Any], context: dict[str, Any] | None = None) -> str:
    """The staff text of ``bildsluss-agent status`` (the same words as the status page)."""
    view = staff_view(snapshot, context)
    lines = [f"Bildsluss {snapshot.get('agent_id', '')} ({snapshot.get('department') or 'ingen avdelning'}) – "
             f"{view['archive']['text']}"]
    if view["context"]:
        lines.append(view["context"]["text"])
    for panel in view["panels"]:
        lines.append("")
        lines.append(f"[{panel['reader']}] {panel['headline'].upper()}" if panel["reader"]
                     else panel["headline"].upper())
        for key in ("progress", "text", "shown", "queued"):
            if panel.get(key):
                lines.append(f"  {panel[key]}")
    if view["recent"]:
        lines.append("")
        lines.append("Senaste kort:")
        for entry in view["recent"][:10]:
            code = f" [{entry['reason']}]" if entry.get("reason") else ""
            lines.append(f"  {entry['at']}  {entry['headline']}{code}")
    counts = snapshot.get("counts") or {}
    lines.append("")
    lines.append(f"Sedan start: {counts.get('archived', 0)} sparade, {counts.get('refused', 0)} nekade, "
                 f"{counts.get('deferred', 0)} väntade på arkivet, {len(snapshot.get('queue', []))} i kö.")
    return "\n".join(lines)
