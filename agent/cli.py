"""``bildsluss-agent``: the agent's command line (see README, "Command-line contract").

    bildsluss-agent ingest PATH --archive HOST:PORT --department HSA-ID
                           [--mode MODE] [--expect ID] [--config FILE]
                           [--insecure | --tls-cert F --tls-key F --tls-ca F [--tls-server-name NAME]] [--json]
    bildsluss-agent ingest --camera PORT [--camera-model MODEL] …   (as for a card)
    bildsluss-agent cameras [--json]                          (agent.card.camera)
    bildsluss-agent run --config FILE [--archive HOST:PORT] [--department HSA-ID]
                        [--insecure | --tls-…] (--udev | --watch ROOT) [--allow-loop]
    bildsluss-agent expect ID [--mode MODE] [--ttl 10m]      (agent.desk.control)
    bildsluss-agent status [--json]                           (agent.desk.control)

Exit codes: 0 archived and wiped; 1 internal error (card untouched); 2 usage or
configuration error; 3 refused (nothing uploaded, nothing deleted); 4 deferred
(archive unreachable, card untouched); 5 archived but the card was not (fully)
wiped (do not reuse the card).
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import gc
import json
import os
import pathlib
import re
import sqlite3
import sys
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent import config as config_mod
from bildsluss_common import logs
from agent.card.model import Mode
from agent.card.progress import NoProgress
from bildsluss_common.identity.numbers import validate as validate_identity

if TYPE_CHECKING:  # the pipeline (and its image libraries) loads only for commands that run it
    from agent.card.camera import CameraRequest
    from agent.card.pipeline import IngestRequest

EXIT_USAGE = 2
_HSA_ID = re.compile(r"^SE\d{10}-[0-9A-Z]+$")
_CAMERA_PORT = re.compile(r"^(usb:(\d{1,3},\d{1,3})?|ptpip:[^\s/]+|disk:/.*)$")


class UsageError(Exception):
    pass


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bildsluss-agent", description="Bildsluss capture-PC agent.")
    parser.add_argument("--version", action="version", version=f"bildsluss-agent {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="ingest one card (a mounted volume or folder) or camera in the foreground")
    ingest.add_argument("path", type=pathlib.Path, nargs="?", help="the card's mount point or a folder")
    ingest.add_argument("--camera", metavar="PORT",
                        help="a camera instead of a card: libgphoto2 port usb:BUS,DEV, ptpip:HOST or disk:/PATH")
    ingest.add_argument("--camera-model", metavar="MODEL",
                        help="libgphoto2's camera model for the port (default: detected; "
                             "'Directory Browse' for disk:, 'PTP/IP Camera' for ptpip:)")
    _archive_options(ingest, config_required=False)
    ingest.add_argument("--mode", choices=[m.value for m in Mode],
                        help="capture mode (default: [agent] mode of --config, else photo)")
    ingest.add_argument("--expect", help="the patient open in the EHR (R5); every number read must match")
    ingest.add_argument("--spool", type=pathlib.Path, help="spool folder (default from config)")
    ingest.add_argument("--agent-id", help="this agent's id (default: host name)")
    ingest.add_argument("--json", action="store_true", help="print the outcome as one JSON object")

    run = sub.add_parser("run", help="the daemon: ingest every card inserted, nobody typing anything")
    _archive_options(run, config_required=True)
    backend = run.add_mutually_exclusive_group(required=True)
    backend.add_argument("--udev", action="store_true",
                         help="detect cards as block devices (udev, or the kernel's uevents without udevd)")
    backend.add_argument("--watch", type=pathlib.Path, metavar="ROOT",
                         help="every new folder under ROOT (an automounter's mount root) is a card")
    run.add_argument("--allow-loop", action="store_true",
                     help="treat loop devices as cards too (tests and demos)")
    run.set_defaults(handler=_cmd_run)

    from agent.desk import commands

    commands.add_cli(sub)  # expect, status, notify-relay: they talk to the running daemon

    cameras = sub.add_parser("cameras", help="list the cameras connected by USB and the configured PTP/IP ones")
    cameras.add_argument("--config", type=pathlib.Path, help="agent TOML config file (PTP/IP addresses)")
    cameras.add_argument("--json", action="store_true", help="one JSON object per camera and line")
    cameras.set_defaults(handler=_cmd_cameras)
    return parser


def _archive_options(p: argparse.ArgumentParser, *, config_required: bool) -> None:
    """The options ``ingest`` and ``run`` share: configuration, archive, department, transport."""
    p.add_argument("--config", type=pathlib.Path, required=config_required, help="agent TOML config file")
    p.add_argument("--archive", metavar="TARGET",
                   help="archive: any gRPC target, HOST:PORT, ipv4:H1:P1,H2:P2 or dns:///name:port "
                        "(calls round-robin over its addresses; default from config)")
    p.add_argument("--department", help="the department's HSA-id, e.g. SE2321000016-15CQ (default from config)")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="plaintext gRPC (loopback development only)")
    tls.add_argument("--tls-cert", type=pathlib.Path, help="client certificate (PEM) for mTLS")
    p.add_argument("--tls-key", type=pathlib.Path, help="client private key (PEM)")
    p.add_argument("--tls-ca", type=pathlib.Path, help="CA certificate of the archive (PEM)")
    p.add_argument("--tls-server-name", metavar="NAME",
                   help="the host name the archive's certificate carries, when TARGET names none "
                        "(an ipv4: list of addresses; default from config)")


def _resolve_config(args: argparse.Namespace) -> tuple[config_mod.AgentConfig, str]:
    """The config file with the flags applied, and the department; raises UsageError."""
    cfg = config_mod.load(args.config)
    archive = cfg.archive
    if args.archive:
        archive = dataclasses.replace(archive, address=args.archive)
    if args.insecure:
        archive = dataclasses.replace(archive, insecure=True)
    if args.tls_cert or args.tls_key or args.tls_ca:
        if not (args.tls_cert and args.tls_key and args.tls_ca):
            raise UsageError("--tls-cert, --tls-key and --tls-ca go together")
        archive = dataclasses.replace(
            archive, insecure=False, tls_cert=args.tls_cert, tls_key=args.tls_key, tls_ca=args.tls_ca
        )
    if args.tls_server_name:
        if archive.insecure:
            raise UsageError("--tls-server-name is for TLS, not with --insecure")
        archive = dataclasses.replace(archive, tls_server_name=args.tls_server_name)
    if not archive.insecure and not archive.tls_ca:
        raise UsageError(
            "no transport security configured: give --tls-cert/--tls-key/--tls-ca, "
            "or --insecure for a development archive on this machine"
        )
    config_mod.check_transport(archive)
    updates: dict = {"archive": archive}
    if getattr(args, "spool", None):
        updates["spool_dir"] = args.spool
    if getattr(args, "agent_id", None):
        updates["agent_id"] = args.agent_id
    cfg = dataclasses.replace(cfg, **updates)

    department = args.department or cfg.department
    if not department:
        raise UsageError("no department: give --department HSA-ID or set [agent] department")
    if not _HSA_ID.match(department):
        raise UsageError(f"--department {department!r} is not an HSA-id like SE2321000016-15CQ")
    return cfg, department


def _resolve(args: argparse.Namespace) -> tuple[config_mod.AgentConfig, IngestRequest | CameraRequest]:
    from agent.card.pipeline import IngestRequest

    cfg, department = _resolve_config(args)
    mode = Mode(args.mode) if args.mode else cfg.mode
    expect = None
    if args.expect:
        checked = validate_identity(args.expect, reserve_formats=cfg.reserve_formats)
        if checked.number is None:
            raise UsageError(f"--expect {args.expect!r} is not a valid identity number: {checked.detail}")
        expect = checked.number.canonical
    if (args.path is None) == (args.camera is None):
        raise UsageError("give either a card's PATH or --camera PORT")
    if args.camera is not None:
        from agent.card.camera import CameraRequest

        if not _CAMERA_PORT.match(args.camera):
            raise UsageError(f"--camera {args.camera!r}: give a port like usb:001,004, ptpip:HOST or disk:/PATH")
        return cfg, CameraRequest(port=args.camera, department=department, mode=mode, expect=expect,
                                  model=args.camera_model)
    if args.camera_model:
        raise UsageError("--camera-model goes with --camera")
    if not args.path.exists():
        raise UsageError(f"{args.path} does not exist: is the card inserted and mounted?")
    if not args.path.is_dir():
        raise UsageError(f"{args.path} is not a folder or mounted card")
    return cfg, IngestRequest(root=args.path.resolve(), department=department, mode=mode, expect=expect)


def _cmd_ingest(args: argparse.Namespace) -> int:
    from agent.card.pipeline import IngestRequest, ingest_card

    cfg, request = _resolve(args)
    # A bar on standard error when a person watches it; standard output stays the outcome.
    progress: contextlib.AbstractContextManager[Any] = contextlib.nullcontext(NoProgress())
    if sys.stderr.isatty():
        from agent.desk.terminal import TerminalProgress

        progress = TerminalProgress()
    with progress as shown:
        if args.camera is not None:
            from agent.card.camera import CameraNotFound, CameraRequest, ingest_camera

            assert isinstance(request, CameraRequest)
            try:
                outcome = ingest_camera(request, cfg, progress=shown)
            except CameraNotFound as exc:
                raise UsageError(f"{exc}: is the camera connected and switched on?") from None
        else:
            assert isinstance(request, IngestRequest)
            outcome = ingest_card(request, cfg, progress=shown)
    if args.json:
        print(json.dumps(outcome.to_json(), ensure_ascii=False))
    else:
        print(f"{outcome.outcome.value.upper()}: {outcome.message}")
        if outcome.reason:
            print(f"  reason: {outcome.reason.value}")
        if outcome.detail:
            print(f"  detail: {outcome.detail}")
        for shown in outcome.to_json()["patients_shown"]:
            print(f"  {shown['patient']} on: {', '.join(shown['files'])}")
        if outcome.patient:
            print(f"  patient: {outcome.patient}")
        if outcome.case_id:
            print(f"  case: {outcome.case_id}")
        for f in outcome.files:
            extra = f" ({f.reason.value})" if f.reason else ""
            print(f"  {f.status:9} {f.path}{extra}")
    return outcome.exit_code


def _cmd_cameras(args: argparse.Namespace) -> int:
    from agent.card.camera import list_cameras

    cfg = config_mod.load(args.config)
    cameras = list_cameras(cfg.cameras.ptpip)
    for cam in cameras:
        if args.json:
            print(json.dumps(cam, ensure_ascii=False))
        else:
            serial = f" serial {cam['serial']}" if cam.get("serial") else ""
            state = "" if cam["connected"] else " (not reachable)"
            print(f"{cam['port']:24} {cam['model']}{serial}{state}")
    if not cameras and not args.json:
        print("no cameras connected")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import signal

    from agent.daemon.loop import Daemon, StartError

    cfg, department = _resolve_config(args)
    if args.allow_loop:
        cfg = dataclasses.replace(cfg, daemon=dataclasses.replace(cfg.daemon, allow_loop=True))
    if args.watch is not None and not args.watch.is_dir():
        raise UsageError(f"--watch {args.watch}: not a folder")
    from agent.desk.control import resolve_group

    try:
        resolve_group(cfg.daemon.control_group)
    except ValueError as exc:
        raise UsageError(f"[daemon] {exc}") from None
    if args.udev and os.geteuid() != 0:
        raise UsageError("--udev mounts cards and needs root (or use --watch ROOT with an automounter)")
    try:
        daemon = Daemon(cfg, department=department,
                        watch_root=args.watch.resolve() if args.watch is not None else None)
    except (OSError, sqlite3.Error) as exc:
        print(f"bildsluss-agent: error: cannot open the journal in {cfg.daemon.state_dir}: {exc}",
              file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
    try:
        return daemon.run()
    except StartError as exc:
        print(f"bildsluss-agent: error: {exc}", file=sys.stderr)
        return 1


def _skip_the_last_collection() -> None:
    """At exit (atexit runs before it) the interpreter's last garbage collection
    walks every object the run made (imaging libraries, gRPC, protobuf): 0.1-0.2 s
    of a card's wall time on a 2-core PC, to free memory that exit frees anyway.
    What must be closed the run closes itself (spool folder, exiftool, reader
    processes, the archive's channel); logging is flushed by its own atexit hook."""
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the program itself (tests pass argv, and go on running)
        atexit.register(_skip_the_last_collection)
    parser = _build_parser()
    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    try:
        if args.command == "ingest":
            return _cmd_ingest(args)
        handler = getattr(args, "handler", None)
        if handler is not None:
            return handler(args)
    except (UsageError, config_mod.ConfigError) as exc:
        print(f"bildsluss-agent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
