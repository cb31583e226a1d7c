"""``bildsluss-archive``: run the archive and administer it.

    serve        run the gRPC server (ingest, cases, agents, health)
    cases        list cases (latest versions), one JSON object per line with --json
    case         show, sign, revise, history, diff, print, consent, teaching-copy (R13, R14, R17, R18, R20)
    export       write a case's media files into a directory
    purge        delete a case for good under a decision (R19)
    admin        departments, rights, roles, users, agents' certificates, forms, confidential
                 patients (R13, R15-R17, issue 10)
    departments  add / list departments (R15; same as `admin department`)
    audit        verify the hash chain, list events, reports for log operators (R18)
    agents       the capture-PC agents and their last heartbeat (R21)
    pki          optional private CA: init, issue-agent (small sites, the demo; issue 10)

``--as USER`` names who acts; every command then goes through the one
authorization check (``authz``) and is audited under that user. Without
``--as`` (where allowed) the command acts as the local operator on the archive
server, with every right, audited as ``cli:<unix user>``; confidential cases
stay masked for it too. ``case …`` and ``purge`` always need ``--as``.

Exit codes: 0 ok, 1 error (one line on stderr), 2 usage or configuration error
or a missing reason, 5 refused: not permitted (a sentence naming the missing
right or department access; the refusal is audited).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import pwd
import sys
from collections.abc import Sequence
from typing import Any

from archive_server import config as config_mod
from bildsluss_common import __version__, logs
from archive_server import admin, logins, reports, versions
from archive_server.audit import configure_syslog
from archive_server.authz import NotPermitted, Principal, ReasonRequired
from archive_server.blobstores import BlobStore, open_blobstore
from archive_server.cases import (
    export_case, normalise_patient, print_case, record_consent, search_cases, show_case, teaching_copy,
)
from archive_server.config import ArchiveConfig, TlsConfig
from archive_server.db import Database
from archive_server.localfiles import private_data_dir
from archive_server.errors import ArchiveError, ConfigError
from archive_server.forms import parse_assignment

PROG = "bildsluss-archive"
EXIT_REFUSED = 5


def _storage_options(p: argparse.ArgumentParser, blobs: bool = False) -> None:
    """The storage flags every subcommand takes (``blobs``: it uses the blob
    store; the others accept --blobs too, so one set of flags fits every call)."""
    p.add_argument("--config", type=pathlib.Path, metavar="FILE", help="archive.toml")
    p.add_argument("--data", type=pathlib.Path, metavar="DIR",
                   help="data directory (default database and blob store live here)")
    p.add_argument("--db", metavar="URL", help="SQLAlchemy URL, e.g. postgresql+psycopg://host/db")
    p.add_argument("--blobs", metavar="URL", help="blob store: file:///path or s3://BUCKET[/PREFIX]"
                   if blobs else argparse.SUPPRESS)


def _as_option(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--as", dest="as_user", metavar="USER", required=required,
                   help="the user who acts (checked against their rights and audited)"
                        + ("" if required else "; default: the local operator"))


def _leaf(sub: Any, name: str, summary: str, *, as_required: bool = False, as_option: bool = True,
          blobs: bool = False) -> argparse.ArgumentParser:
    """A subcommand with the storage options and (unless ``as_option`` is False) ``--as``."""
    p = sub.add_parser(name, help=summary)
    if as_option:
        _as_option(p, as_required)
    _storage_options(p, blobs=blobs)
    return p


def _emergency(p: argparse.ArgumentParser, reason_help: str) -> None:
    p.add_argument("--emergency", action="store_true",
                   help="emergency access (nödöppning) to a confidential case: needs case.emergency_open "
                        "in the case's department and --reason; logged")
    p.add_argument("--reason", default=None, metavar="TEXT", help=reason_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Bildsluss central media archive")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gRPC server")
    _storage_options(p, blobs=True)
    p.add_argument("--listen", metavar="HOST:PORT", help="gRPC address (default 127.0.0.1:50051; port 0: any)")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="HTTPS endpoint: logins, the JSON API, the web client (TLS with --tls-cert/--tls-key; "
                        "plaintext only on loopback with --insecure)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="serve plaintext: development on a loopback address only")
    p.add_argument("--tls-cert", type=pathlib.Path, metavar="F", help="server certificate chain (PEM)")
    p.add_argument("--tls-key", type=pathlib.Path, metavar="F", help="server private key (PEM)")
    p.add_argument("--client-ca", type=pathlib.Path, metavar="F", help="CA that signs agent certificates")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    p = _leaf(sub, "cases", "list cases (latest versions)")
    p.add_argument("--patient", metavar="ID", help="only this patient's cases")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = _leaf(sub, "export", "write a case's media files into DEST", blobs=True)
    p.add_argument("case_id", metavar="CASE_ID")
    p.add_argument("dest", metavar="DEST", type=pathlib.Path)
    _emergency(p, "why (with --emergency)")

    p = sub.add_parser("case", help="one case: show, sign, revise, history, diff, print, consent, teaching-copy")
    csub = p.add_subparsers(dest="action", required=True)
    a = _leaf(csub, "show", "one version of a case (default the latest)", as_required=True)
    a.add_argument("case_id", metavar="CASE_ID")
    a.add_argument("--version", type=int, metavar="N", help="this version instead of the latest")
    a.add_argument("--json", action="store_true", help="one JSON object")
    _emergency(a, "why the confidential case is opened (with --emergency)")
    a = _leaf(csub, "sign", "sign (lock) the latest version", as_required=True)
    a.add_argument("case_id", metavar="CASE_ID")
    a.add_argument("--json", action="store_true")
    _emergency(a, "why (with --emergency)")
    a = _leaf(csub, "revise", "correct a case: in place while unsigned, as a new version once signed",
              as_required=True)
    a.add_argument("case_id", metavar="CASE_ID")
    a.add_argument("--reason", default="", metavar="TEXT", help="why the case is corrected (required)")
    a.add_argument("--patient", metavar="ID", help="the right patient")
    a.add_argument("--field", action="append", default=[], metavar="K=V",
                   help="set a form field (checked against the form); K= clears it; repeatable")
    a.add_argument("--drop-media", action="append", default=[], nargs="+", metavar="SHA256",
                   help="remove media items from the version")
    a.add_argument("--form", metavar="NAME", help="switch the case to this form template")
    a.add_argument("--emergency", action="store_true", help="emergency access to a confidential case")
    a.add_argument("--json", action="store_true")
    a = _leaf(csub, "history", "every version of a case", as_required=True)
    a.add_argument("case_id", metavar="CASE_ID")
    a.add_argument("--json", action="store_true", help="one JSON object per version and line")
    _emergency(a, "why (with --emergency)")
    a = _leaf(csub, "diff", "compare two versions (fields and media)", as_required=True)
    a.add_argument("case_id", metavar="CASE_ID")
    a.add_argument("first", type=int, metavar="V1")
    a.add_argument("second", type=int, metavar="V2")
    a.add_argument("--json", action="store_true", help="one JSON object")
    _emergency(a, "why (with --emergency)")
    a = _leaf(csub, "print", "a PDF of the case with who printed it, when and why", as_required=True,
              blobs=True)
    a.add_argument("case_id", metavar="CASE_ID")
    a.add_argument("--out", type=pathlib.Path, required=True, metavar="FILE.pdf")
    _emergency(a, "why the case is printed (required; logged and printed on every page)")
    a = _leaf(csub, "consent", "record the patient's written consent (a scanned document)",
              as_required=True, blobs=True)
    a.add_argument("case_id", metavar="CASE_ID")
    a.add_argument("--document", type=pathlib.Path, required=True, metavar="FILE")
    a.add_argument("--json", action="store_true")
    a = _leaf(csub, "teaching-copy", "de-identified copies of the images, for teaching (needs consent)",
              as_required=True, blobs=True)
    a.add_argument("case_id", metavar="CASE_ID")
    a.add_argument("--out", type=pathlib.Path, required=True, metavar="DIR")
    a.add_argument("--media", action="append", default=[], metavar="SHA256", help="only these images")
    a.add_argument("--json", action="store_true")

    p = _leaf(sub, "purge", "delete a case, its versions and unshared media for good (sysadmin)",
              as_required=True, blobs=True)
    p.add_argument("case_id", metavar="CASE_ID")
    p.add_argument("--decision", required=True, metavar="REF", help="the decision the purge follows")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("admin", help="departments, rights, roles, users, agents, forms, confidential patients")
    asub = p.add_subparsers(dest="area", required=True)
    d = asub.add_parser("department", help="departments (R15)")
    dsub = d.add_subparsers(dest="action", required=True)
    a = _leaf(dsub, "add", "register a department or rename it")
    a.add_argument("hsa_id", metavar="HSA-ID")
    a.add_argument("--name", required=True, help="the full name, as the EHR names it")
    a = _leaf(dsub, "list", "list departments")
    a.add_argument("--json", action="store_true")
    a = _leaf(asub, "rights", "the fixed list of rights", as_option=False)
    a.add_argument("--json", action="store_true")
    d = asub.add_parser("role", help="roles: named sets of rights (R16)")
    dsub = d.add_subparsers(dest="action", required=True)
    a = _leaf(dsub, "add", "define a role or change its rights")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--rights", required=True, metavar="RIGHT,RIGHT…")
    a = _leaf(dsub, "list", "list roles")
    a.add_argument("--json", action="store_true")
    d = asub.add_parser("user", help="users' access to departments (R16)")
    dsub = d.add_subparsers(dest="action", required=True)
    a = _leaf(dsub, "add", "give a user access to a department with a role (repeat per department)")
    a.add_argument("user", metavar="USER")
    a.add_argument("--department", required=True, metavar="HSA-ID")
    a.add_argument("--role", required=True, metavar="ROLE")
    a = _leaf(dsub, "list", "list users, departments and roles")
    a.add_argument("--json", action="store_true")
    a = _leaf(dsub, "passwd", "set a local password: one line on standard input (the user's sessions end)")
    a.add_argument("user", metavar="USER")
    a = _leaf(dsub, "link", "link the identity provider's claim value (e.g. the HSA-id) to a user")
    a.add_argument("user", metavar="USER")
    a.add_argument("subject", metavar="VALUE", help="the value of the [oidc] claim that names this person")
    a = _leaf(dsub, "unlink", "remove a user's identity-provider link (their IdP sessions end)")
    a.add_argument("user", metavar="USER")
    a = _leaf(dsub, "logout", "end every session of a user (lost device, person left)")
    a.add_argument("user", metavar="USER")
    d = asub.add_parser("agent", help="capture-PC agents' certificates (issue 10)")
    dsub = d.add_subparsers(dest="action", required=True)
    a = _leaf(dsub, "add", "bind an agent's certificate to its id and department (again: replace it)")
    a.add_argument("agent_id", metavar="AGENT_ID")
    a.add_argument("--department", required=True, metavar="HSA-ID")
    a.add_argument("--cert", required=True, type=pathlib.Path, metavar="AGENT.pem",
                   help="the agent's certificate (PEM or DER), issued by the CA given to serve --client-ca")
    a = _leaf(dsub, "revoke", "refuse every further call of the agent's certificate")
    a.add_argument("agent_id", metavar="AGENT_ID")
    a = _leaf(dsub, "list", "bound agents: id, department, fingerprint, revoked, last seen")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    d = asub.add_parser("device", help="departments' registered capture devices (R6), handed to their agents")
    dsub = d.add_subparsers(dest="action", required=True)
    for action, text in (("add", "register a capture device for a department"),
                         ("remove", "remove a registered device (as registered, serial included)")):
        a = _leaf(dsub, action, text)
        a.add_argument("--department", required=True, metavar="HSA-ID")
        a.add_argument("--make", required=True, help="as the files name it (exiftool -Make)")
        a.add_argument("--model", required=True, help="as the files name it (exiftool -Model)")
        a.add_argument("--serial", default="", help="only this unit (default: any serial of the model)")
    a = _leaf(dsub, "list", "registered devices: department, make, model, serial")
    a.add_argument("--department", metavar="HSA-ID", help="only this department's")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a = _leaf(asub, "confidential", "mark a patient's cases confidential, or lift it (R17)")
    a.add_argument("patient", metavar="ID", help="the patient's number")
    a.add_argument("state", choices=["on", "off"])
    d = asub.add_parser("form", help="form templates (R13)")
    dsub = d.add_subparsers(dest="action", required=True)
    a = _leaf(dsub, "add", "add a form template")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--title", default="", help="the form's title")
    a.add_argument("--field", action="append", required=True, metavar="NAME:TYPE[:required]",
                   help="a field; TYPE: text, int, bool, date, datetime, choice(a|b); repeatable")
    a = _leaf(dsub, "list", "list form templates")
    a.add_argument("--json", action="store_true")

    p = sub.add_parser("departments", help="manage departments (as `admin department`)")
    dsub = p.add_subparsers(dest="action", required=True)
    a = _leaf(dsub, "add", "register a department or rename it")
    a.add_argument("hsa_id", metavar="HSA-ID")
    a.add_argument("--name", required=True, help="the full name, as the EHR names it")
    a = _leaf(dsub, "list", "list departments")
    a.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("audit", help="audit log tools")
    asub = p.add_subparsers(dest="action", required=True)
    a = _leaf(asub, "verify", "check the hash chain; exit 1 when broken")
    a = _leaf(asub, "list", "audit events, oldest first (needs audit.read)")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a.add_argument("--patient", metavar="ID")
    a.add_argument("--user", metavar="USER", help="who acted (a user, cli:NAME or agent:ID)")
    a.add_argument("--department", metavar="HSA-ID")
    a.add_argument("--since", metavar="TIME", help="ISO date/time (UTC) or Nd (N days ago)")
    a.add_argument("--until", metavar="TIME", help="ISO date/time (UTC), exclusive")
    a = _leaf(asub, "report", "event counts per department, user or patient (needs statistics.read)")
    a.add_argument("--by", required=True, choices=sorted(reports.REPORT_KEYS))
    a.add_argument("--csv", action="store_true", help="CSV with a header line (default: JSON lines)")
    a.add_argument("--since", metavar="TIME")
    a.add_argument("--until", metavar="TIME")

    p = _leaf(sub, "fsck", "check every blob in the store against the database (safe while serving)",
              as_option=False, blobs=True)
    p.add_argument("--repair", action="store_true",
                   help="quarantine corrupt blobs, delete orphans, finish stalled purges")
    p.add_argument("--quick", action="store_true", help="sizes only: do not read and hash every blob")
    p.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="orphans younger than this are left alone (an upload may be recording them)")
    p.add_argument("--json", action="store_true", help="one JSON object")

    p = sub.add_parser("db", help="the database schema (Alembic migrations)")
    dsub = p.add_subparsers(dest="action", required=True)
    a = _leaf(dsub, "upgrade", "migrate the database to this release's schema (safe while serving)",
              as_option=False)
    a.add_argument("--json", action="store_true", help="one JSON object")
    a = _leaf(dsub, "current", "the database's schema revision and this release's", as_option=False)
    a.add_argument("--json", action="store_true", help="one JSON object")

    p = sub.add_parser("pki", help="a private CA for small sites and demos (optional; issue 10)")
    dsub = p.add_subparsers(dest="action", required=True)
    a = _leaf(dsub, "init", "make a CA and the archive's server certificate (in DATA/pki unless --dir)",
              as_option=False)
    a.add_argument("--dir", type=pathlib.Path, metavar="DIR", help="where the CA lives (default DATA/pki)")
    a.add_argument("--host", action="append", default=[], metavar="NAME",
                   help="a name or address agents reach the archive by (repeatable; default: this "
                        "machine's name and loopback)")
    a = _leaf(dsub, "issue-agent", "sign an agent's client certificate with the private CA", as_option=False)
    a.add_argument("agent_id", metavar="AGENT_ID")
    a.add_argument("--dir", type=pathlib.Path, metavar="DIR", help="where the CA lives (default DATA/pki)")
    a.add_argument("--out", type=pathlib.Path, metavar="DIR", help="where AGENT_ID.crt (and .key) go "
                                                                   "(default: the CA's agents/ folder)")
    a.add_argument("--csr", type=pathlib.Path, metavar="FILE",
                   help="sign this request made on the capture PC (its key never leaves it) instead of "
                        "making a key pair here")

    # Agent registry (R21; helper C2's block): what the heartbeats say.
    p = sub.add_parser("agents", help="the fleet: bound and reporting agents, alive, silent or never seen")
    p.add_argument("--json", action="store_true", help="one JSON object per agent and line")
    p.add_argument("--department", metavar="HSA-ID", help="only this department's agents")
    _storage_options(p)
    return parser


def load_config(args: argparse.Namespace) -> ArchiveConfig:
    cfg = config_mod.load(args.config)
    cfg = cfg.replace(
        data_dir=args.data,
        db_url=args.db,
        blobs_url=getattr(args, "blobs", None),
        listen=getattr(args, "listen", None),
        http=getattr(args, "http", None),
        insecure=getattr(args, "insecure", None),
        log_level=getattr(args, "log_level", None),
    )
    if any(getattr(args, k, None) for k in ("tls_cert", "tls_key", "client_ca")):
        cfg = cfg.replace(tls=TlsConfig(cert=args.tls_cert, key=args.tls_key, client_ca=args.client_ca))
    config_mod.validate(cfg, "command line")
    return cfg


def _database(cfg: ArchiveConfig) -> Database:
    private_data_dir(cfg)
    db = Database(cfg.effective_db_url, pool_size=2, max_overflow=2,
                  busy_timeout_ms=cfg.sqlite_busy_timeout_ms)
    db.upgrade_schema()
    return db


def _blobstore(cfg: ArchiveConfig, db: Database) -> BlobStore:
    return open_blobstore(cfg.effective_blobs_url, db, cfg.s3_options())


def os_account() -> str:
    """The operating-system account running this command, from the process's
    real uid (not $USER or $LOGNAME, which the caller sets at will)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def _principal(args: argparse.Namespace) -> Principal:
    """The command line's principal: the local operator (every right, audited
    as ``cli:<account>``), or with ``--as USER`` that user's rights; either
    way the audit records ``cli`` and the OS account (``os:<account>``)."""
    account = os_account()
    user = getattr(args, "as_user", None)
    if user is not None:
        return Principal.named(user, login="cli", origin=f"os:{account}")
    return Principal.local(account)


def _emergency_reason(args: argparse.Namespace) -> str | None:
    if not getattr(args, "emergency", False):
        return None
    if not (args.reason or "").strip():
        raise ReasonRequired("emergency access (nödöppning) needs a reason: give --reason TEXT.")
    return args.reason


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, sort_keys=True))


def cmd_serve(cfg: ArchiveConfig) -> int:
    from archive_server.server import serve  # grpc only where needed

    logs.setup(cfg.log_level)
    return serve(cfg)


EXIT_DAMAGED = 4


def cmd_fsck(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    from archive_server.fsck import fsck

    db = _database(cfg)
    report = fsck(db, _blobstore(cfg, db), repair=args.repair, quick=args.quick, orphan_grace_s=args.grace)
    if args.json:
        _print_json(report.as_dict())
    else:
        for f in report.findings:
            print(f"{f.kind}\t{f.key}\t{f.detail}" + (f"\trepaired: {f.repaired}" if f.repaired else ""))
        summary = report.as_dict()
        counts = ", ".join(f"{n} {k}" for k, n in summary["counts"].items() if n) or "no problems"
        print(f"{report.blobs_in_database} blob(s) recorded, {report.objects_in_store} object(s) in the store: "
              f"{counts}; {summary['repaired']} repaired")
    return 0 if report.clean else EXIT_DAMAGED


def cmd_db(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    from archive_server import schema

    private_data_dir(cfg)
    db = Database(cfg.effective_db_url, pool_size=1, max_overflow=1, busy_timeout_ms=cfg.sqlite_busy_timeout_ms)
    try:
        if args.action == "upgrade":
            result = db.upgrade_schema()
            row = {"before": result.before, "after": result.after, "changed": result.changed}
            text = (f"database upgraded from {result.before or 'empty'} to {result.after}" if result.changed
                    else f"database already at {result.after}")
        else:
            found, head = schema.current(db.engine), schema.head()
            row = {"current": found, "head": head, "at_head": found == head}
            text = f"database at {found or 'none (empty)'}; this release's schema is {head}"
    finally:
        db.dispose()
    _print_json(row) if args.json else print(text)
    return 0


def _counted(case: dict) -> dict:
    """A ``cases --json`` line: ``media`` is the NUMBER of media items (the
    command-line contract) and the items are ``media_items``; ``case show``
    keeps ``media`` a list. A masked (confidential) case stays as it is."""
    if "media" not in case:
        return case
    return {**case, "media": case["media_count"], "media_items": case["media"]}


def cmd_cases(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    patient = normalise_patient(args.patient, cfg.reserve_formats) if args.patient else None
    results = search_cases(_database(cfg), _principal(args), patient)
    for case in results:
        if args.json:
            _print_json(_counted(case))
        elif case.get("display"):
            print(f"{case['case_id']}  {case['display']}")
        else:
            print(f"{case['case_id']}  {case['patient']}  {case['department']}  v{case['version']}  "
                  f"{case['status']}  {case['created_at']}  {case['media_count']} file(s)")
    return 0


def cmd_export(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    db = _database(cfg)
    written = export_case(db, _blobstore(cfg, db),
                          args.case_id, args.dest, _principal(args), emergency_reason=_emergency_reason(args))
    print(f"exported {len(written)} file(s) of case {args.case_id} to {args.dest.resolve()}")
    return 0


def cmd_case(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    db, who = _database(cfg), _principal(args)
    if args.action == "show":
        case = show_case(db, who, args.case_id, version=args.version, emergency_reason=_emergency_reason(args))
        if args.json:
            _print_json(case)
        else:
            print(f"{case['case_id']}  v{case['version']}/{case['latest_version']}  {case['patient']}  "
                  f"{case['department']}  {case['status']}  {case['media_count']} file(s)")
            for key, value in case["form"].items():
                print(f"  {key}: {value}")
        return 0
    if args.action == "sign":
        result = versions.sign_case(db, who, args.case_id, emergency_reason=_emergency_reason(args))
        _print_json(result) if args.json else print(
            f"case {args.case_id} version {result['version']} signed by {result['signed_by']}")
        return 0
    if args.action == "revise":
        emergency = args.reason if args.emergency else None
        result = versions.revise_case(
            db, who, args.case_id, reason=args.reason,
            patient=normalise_patient(args.patient, cfg.reserve_formats) if args.patient else None,
            fields=[parse_assignment(f) for f in args.field],
            drop_media=[sha for group in args.drop_media for sha in group], form_template=args.form,
            emergency_reason=emergency,
            reserve_formats=cfg.reserve_formats)
        _print_json(result) if args.json else print(
            f"case {args.case_id} version {result['version']} "
            f"{'created' if result['new_version'] else 'edited'}: {', '.join(result['changes']) or 'no change'}")
        return 0
    if args.action == "history":
        for version in versions.case_history(db, who, args.case_id, emergency_reason=_emergency_reason(args)):
            if args.json:
                _print_json(version)
            else:
                print(f"v{version['version']}  {version['status']}  {version['version_created_at']}  "
                      f"{version['version_created_by']}  {version['reason'] or '-'}")
        return 0
    if args.action == "diff":
        diff = versions.diff_versions(db, who, args.case_id, args.first, args.second,
                                      emergency_reason=_emergency_reason(args))
        if args.json:
            _print_json(diff)
        else:
            for key, change in diff["fields"].items():
                print(f"{key}: {change['from']!r} -> {change['to']!r}")
            for m in diff["media_removed"]:
                print(f"- {m['path']} {m['sha256']}")
            for m in diff["media_added"]:
                print(f"+ {m['path']} {m['sha256']}")
        return 0
    blobs = _blobstore(cfg, db)
    if args.action == "print":
        emergency = args.reason if args.emergency else None
        result = print_case(db, blobs, who, args.case_id, reason=args.reason or "", out=args.out,
                            emergency_reason=emergency)
        print(f"printed case {args.case_id} version {result['version']} to {result['out']}")
        return 0
    if args.action == "consent":
        result = record_consent(db, blobs, who, args.case_id, args.document)
        _print_json(result) if args.json else print(
            f"consent {result['consent_id']} recorded with case {args.case_id} by {result['recorded_by']}")
        return 0
    if args.action == "teaching-copy":
        result = teaching_copy(db, blobs, who, args.case_id, args.out, media=args.media)
        _print_json(result) if args.json else print(
            f"{len(result['files'])} de-identified image(s) written to {args.out.resolve()}")
        return 0
    raise AssertionError(args.action)


def cmd_purge(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    db = _database(cfg)
    result = admin.purge_case(db, _blobstore(cfg, db), _principal(args),
                              args.case_id, args.decision)
    if args.json:
        _print_json(result)
    else:
        print(f"case {args.case_id} purged: {result['versions']} version(s), {result['blobs_deleted']} blob(s) "
              f"deleted, {result['blobs_kept']} kept (used by other cases)")
    if result["blobs_not_deleted"]:
        print(f"{PROG}: {len(result['blobs_not_deleted'])} blob file(s) could not be deleted (see the log): "
              f"{', '.join(result['blobs_not_deleted'])}", file=sys.stderr)
        return 1
    return 0


def _print_rows(rows: list[dict[str, Any]], as_json: bool, columns: Sequence[str]) -> None:
    for row in rows:
        if as_json:
            _print_json(row)
        else:
            print("\t".join(str(row[c]) if not isinstance(row[c], list) else ",".join(map(str, row[c]))
                            for c in columns))


def cmd_admin(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    if args.area == "rights":
        _print_rows(admin.list_rights(), args.json, ("right", "description"))
        return 0
    db = _database(cfg)
    who = _principal(args)
    if args.area == "department":
        return _departments(db, who, args)
    if args.area == "role" and args.action == "add":
        result = admin.add_role(db, who, args.name, args.rights.split(","))
        print(f"role {result['role']}: {', '.join(result['rights'])}")
    elif args.area == "role":
        _print_rows(admin.list_roles(db, who), args.json, ("role", "rights"))
    elif args.area == "user" and args.action == "add":
        what = admin.add_user(db, who, args.user, args.department, args.role)
        print(f"user {args.user}: {args.role} in {args.department} ({what})")
    elif args.area == "user" and args.action == "passwd":
        password = sys.stdin.readline()
        if not password.strip():
            print(f"{PROG}: give the new password as one line on standard input", file=sys.stderr)
            return 2
        result = logins.set_password(db, who, args.user, password, cfg.login)
        print(f"password set for {result['user']}; {result['sessions_ended']} session(s) ended")
    elif args.area == "user" and args.action == "link":
        result = logins.link_idp_subject(db, who, args.user, args.subject)
        print(f"user {result['user']} logs in through the identity provider as {result['idp_subject']}")
    elif args.area == "user" and args.action == "unlink":
        result = logins.link_idp_subject(db, who, args.user, None)
        print(f"user {result['user']} no longer logs in through the identity provider")
    elif args.area == "user" and args.action == "logout":
        result = logins.end_sessions(db, who, args.user)
        print(f"{result['sessions_ended']} session(s) of {result['user']} ended")
    elif args.area == "user":
        _print_rows(admin.list_users(db, who), args.json, ("user", "department", "role"))
    elif args.area == "agent":
        return _agents_admin(db, who, args)
    elif args.area == "device":
        return _devices_admin(db, who, args)
    elif args.area == "confidential":
        result = admin.set_confidential(db, who, normalise_patient(args.patient, cfg.reserve_formats), args.state == "on")
        print(f"patient {'marked confidential' if args.state == 'on' else 'no longer confidential'}: "
              f"{result['cases']} case(s), {result['changed']} changed")
    elif args.area == "form" and args.action == "add":
        result = admin.add_form(db, who, args.name, args.title, args.field)
        print(f"form {result['form']} added with {len(result['fields'])} field(s)")
    elif args.area == "form":
        _print_rows(admin.list_forms(db, who), args.json, ("form", "title"))
    return 0


def _agents_admin(db: Database, who: Principal, args: argparse.Namespace) -> int:
    from archive_server import agentcerts

    if args.action == "add":
        try:
            certificate = args.cert.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read --cert {args.cert}: {e.strerror}") from None
        what = agentcerts.bind_agent(db, who, args.agent_id, args.department, certificate)
        print(f"agent {args.agent_id} in {args.department}: certificate {what}")
    elif args.action == "revoke":
        what = agentcerts.revoke_agent(db, who, args.agent_id)
        print(f"agent {args.agent_id}: {'revoked' if what == 'revoked' else 'already revoked'}")
    else:
        _print_rows(agentcerts.list_bindings(db, who), args.json,
                    ("agent_id", "department", "fingerprint", "revoked", "last_seen"))
    return 0


def _devices_admin(db: Database, who: Principal, args: argparse.Namespace) -> int:
    from archive_server import devices

    if args.action == "list":
        _print_rows(devices.list_devices(db, who, args.department), args.json,
                    ("department", "make", "model", "serial"))
        return 0
    change = devices.add_device if args.action == "add" else devices.remove_device
    what = change(db, who, args.department, args.make, args.model, args.serial)
    serial = f" serial {args.serial}" if args.serial else ""
    print(f"device {args.make} {args.model}{serial} in {args.department}: {what}")
    return 0


def _departments(db: Database, who: Principal, args: argparse.Namespace) -> int:
    if args.action == "add":
        what = admin.add_department(db, who, args.hsa_id, args.name)
        print(f"department {args.hsa_id.strip()} {what}: {args.name.strip()}")
        return 0
    rows = admin.list_departments(db, who)
    _print_rows(rows, args.json, ("hsa_id", "name"))
    return 0


def cmd_audit(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    db, who = _database(cfg), _principal(args)
    if args.action == "list":
        rows = reports.list_events(db, who, patient=normalise_patient(args.patient, cfg.reserve_formats) if args.patient else None,
                                   user=args.user, department=args.department,
                                   since=reports.parse_since(args.since), until=reports.parse_since(args.until))
        _print_rows(rows, True, ()) if args.json else _print_rows(
            rows, False, ("seq", "at", "who", "action", "target", "outcome", "why"))
        return 0
    if args.action == "report":
        rows = reports.report(db, who, args.by, since=reports.parse_since(args.since),
                              until=reports.parse_since(args.until))
        if args.csv:
            sys.stdout.write(reports.to_csv(rows))
        else:
            _print_rows(rows, True, ())
        return 0
    check = reports.verify(db, who)
    if check.ok:
        print(f"audit chain intact: {check.events} event(s)")
        return 0
    print(f"{PROG}: audit chain BROKEN at event {check.first_bad_seq}: {check.reason}", file=sys.stderr)
    return 1


def cmd_pki(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    from archive_server import pki

    folder = args.dir or cfg.data_dir / "pki"
    if args.action == "init":
        made = pki.init(folder, args.host or None)
        print(f"CA and server certificate made in {folder}:")
        print(f"  serve --tls-cert {made['server_cert']} --tls-key {made['server_key']} --client-ca {made['ca']}")
        print(f"  agents: --tls-ca {made['ca']}")
        return 0
    csr = None
    if args.csr is not None:
        try:
            csr = args.csr.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read --csr {args.csr}: {e.strerror}") from None
    issued = pki.issue_agent(folder, args.agent_id, args.out or folder / "agents", csr=csr)
    print(f"certificate of agent {args.agent_id}: {issued.certificate} (SHA-256 {issued.fingerprint})")
    if issued.key is not None:
        print(f"its private key: {issued.key} (copy it to the capture PC only, mode 0600, then delete it here)")
    print(f"bind it: {PROG} admin agent add {args.agent_id} --department HSA-ID --cert {issued.certificate}")
    return 0


def cmd_agents(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    from archive_server.agents import list_agents

    for agent in list_agents(_database(cfg), department=args.department):
        if args.json:
            print(json.dumps(agent, ensure_ascii=False, sort_keys=True))
        else:
            alive = agent["liveness"] if agent["liveness"] == "alive" else agent["liveness"].upper()
            refused = ", ".join(r["reason"] for r in agent["refused"][:3]) or "-"
            print(f"{agent['agent_id']}  {alive}  {agent['state'] or '-'}  {agent['department'] or '-'}  "
                  f"v{agent['version'] or '-'}  queue {agent['queue']}  last seen {agent['last_seen']}  "
                  f"refused: {refused}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args)
        if args.command != "serve":
            logs.setup("warning")
            configure_syslog(cfg.audit_syslog)
        if args.command == "serve":
            return cmd_serve(cfg)
        if args.command == "cases":
            return cmd_cases(cfg, args)
        if args.command == "case":
            return cmd_case(cfg, args)
        if args.command == "export":
            return cmd_export(cfg, args)
        if args.command == "purge":
            return cmd_purge(cfg, args)
        if args.command == "admin":
            return cmd_admin(cfg, args)
        if args.command == "departments":
            return _departments(_database(cfg), _principal(args), args)
        if args.command == "audit":
            return cmd_audit(cfg, args)
        if args.command == "agents":
            return cmd_agents(cfg, args)
        if args.command == "pki":
            return cmd_pki(cfg, args)
        if args.command == "db":
            return cmd_db(cfg, args)
        if args.command == "fsck":
            return cmd_fsck(cfg, args)
        parser.error(f"unknown command {args.command}")
    except ConfigError as e:
        print(f"{PROG}: configuration error: {e}", file=sys.stderr)
        return 2
    except NotPermitted as e:
        print(f"{PROG}: refused ({e.reason}): {e}", file=sys.stderr)
        return EXIT_REFUSED
    except ReasonRequired as e:
        print(f"{PROG}: refused ({e.reason}): {e}", file=sys.stderr)
        return 2
    except ArchiveError as e:
        reason = getattr(e, "reason", None)
        print(f"{PROG}: error{f' ({reason})' if reason else ''}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line, not a traceback
        print(f"{PROG}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
