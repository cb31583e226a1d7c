"""``bildsluss-archive``: run the archive and administer it.

    serve        run the gRPC server (ingest + health)
    cases        list cases (latest versions), one JSON object per line with --json
    export       write a case's media files into a directory
    departments  add / list departments (R15)
    audit        verify the audit log's hash chain (R18)

Exit codes: 0 ok, 2 usage or configuration error, 1 any other error (one line
on stderr). Reads and exports are audit-logged with actor ``cli:<user>``.
"""
from __future__ import annotations

import argparse
import getpass
import json
import pathlib
import sys
from collections.abc import Sequence

import sqlalchemy as sa

from archive_server import config as config_mod
from bildsluss_common import logs
from archive_server.audit import append_audit, verify_audit_chain
from archive_server.blobstore import open_blobstore
from archive_server.cases import export_case, normalise_patient, search_cases
from archive_server.config import ArchiveConfig, TlsConfig
from archive_server.db import Database
from archive_server.errors import ArchiveError, ConfigError
from archive_server.models import Department
from archive_server.validation import hsa_id as check_hsa_id

PROG = "bildsluss-archive"


def _storage_options(p: argparse.ArgumentParser, blobs: bool = False) -> None:
    p.add_argument("--config", type=pathlib.Path, metavar="FILE", help="archive.toml")
    p.add_argument("--data", type=pathlib.Path, metavar="DIR",
                   help="data directory (default database and blob store live here)")
    p.add_argument("--db", metavar="URL", help="SQLAlchemy URL, e.g. postgresql+psycopg://host/db")
    if blobs:
        p.add_argument("--blobs", metavar="URL", help="blob store: file:///path (s3:// later)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Bildsluss central media archive")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gRPC ingest server")
    _storage_options(p, blobs=True)
    p.add_argument("--listen", metavar="HOST:PORT", help="gRPC address (default 127.0.0.1:50051; port 0: any)")
    p.add_argument("--http", metavar="HOST:PORT", help="dashboard/metrics address (not implemented yet)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="serve plaintext: development on a loopback address only")
    p.add_argument("--tls-cert", type=pathlib.Path, metavar="F", help="server certificate chain (PEM)")
    p.add_argument("--tls-key", type=pathlib.Path, metavar="F", help="server private key (PEM)")
    p.add_argument("--client-ca", type=pathlib.Path, metavar="F", help="CA that signs agent certificates")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    p = sub.add_parser("cases", help="list cases (latest versions)")
    _storage_options(p)
    p.add_argument("--patient", metavar="ID", help="only this patient's cases")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("export", help="write a case's media files into DEST")
    p.add_argument("case_id", metavar="CASE_ID")
    p.add_argument("dest", metavar="DEST", type=pathlib.Path)
    _storage_options(p, blobs=True)

    p = sub.add_parser("departments", help="manage departments")
    dsub = p.add_subparsers(dest="action", required=True)
    a = dsub.add_parser("add", help="register a department or rename it")
    a.add_argument("hsa_id", metavar="HSA-ID")
    a.add_argument("--name", required=True, help="the full name, as the EHR names it")
    _storage_options(a)
    a = dsub.add_parser("list", help="list departments")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    _storage_options(a)

    p = sub.add_parser("audit", help="audit log tools")
    asub = p.add_subparsers(dest="action", required=True)
    a = asub.add_parser("verify", help="check the hash chain; exit 1 when broken")
    _storage_options(a)
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
    db = Database(cfg.effective_db_url, pool_size=2, max_overflow=2,
                  busy_timeout_ms=cfg.sqlite_busy_timeout_ms)
    db.create_schema()
    return db


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def cmd_serve(cfg: ArchiveConfig) -> int:
    from archive_server.server import serve  # grpc only where needed

    logs.setup(cfg.log_level)
    return serve(cfg)


def cmd_cases(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    patient = normalise_patient(args.patient) if args.patient else None
    results = search_cases(_database(cfg), _actor(), patient)
    for case in results:
        if args.json:
            print(json.dumps(case, ensure_ascii=False, sort_keys=True))
        else:
            print(f"{case['case_id']}  {case['patient']}  {case['department']}  v{case['version']}  "
                  f"{case['status']}  {case['created_at']}  {len(case['media'])} file(s)")
    return 0


def cmd_export(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    written = export_case(_database(cfg), open_blobstore(cfg.effective_blobs_url),
                          args.case_id, args.dest, _actor())
    print(f"exported {len(written)} file(s) of case {args.case_id} to {args.dest.resolve()}")
    return 0


def cmd_departments(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    db = _database(cfg)
    if args.action == "add":
        hsa = check_hsa_id(args.hsa_id, "HSA-ID")
        name = args.name.strip()
        if not name:
            raise ConfigError("--name must not be empty")
        with db.write() as s:
            dep = s.execute(sa.select(Department).where(Department.hsa_id == hsa)).scalar_one_or_none()
            if dep is None:
                s.add(Department(hsa_id=hsa, name=name, registered_by="admin"))
                append_audit(s, _actor(), "department.added", details={"hsa_id": hsa, "name": name})
                what = "added"
            elif dep.name != name:
                old, dep.name = dep.name, name
                append_audit(s, _actor(), "department.renamed",
                             details={"hsa_id": hsa, "old_name": old, "name": name})
                what = "renamed"
            else:
                what = "unchanged"
        print(f"department {hsa} {what}: {name}")
        return 0
    with db.read() as s:
        rows = list(s.scalars(sa.select(Department).order_by(Department.hsa_id)))
        for d in rows:
            if args.json:
                print(json.dumps({"hsa_id": d.hsa_id, "name": d.name, "registered_by": d.registered_by,
                                  "created_at": d.created_at.isoformat()}, ensure_ascii=False))
            else:
                print(f"{d.hsa_id}\t{d.name}")
    return 0


def cmd_audit(cfg: ArchiveConfig, args: argparse.Namespace) -> int:
    db = _database(cfg)
    with db.read() as s:
        check = verify_audit_chain(s)
    if check.ok:
        print(f"audit chain intact: {check.events} event(s)")
        return 0
    print(f"{PROG}: audit chain BROKEN at event {check.first_bad_seq}: {check.reason}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args)
        if args.command != "serve":
            logs.setup("warning")
        if args.command == "serve":
            return cmd_serve(cfg)
        if args.command == "cases":
            return cmd_cases(cfg, args)
        if args.command == "export":
            return cmd_export(cfg, args)
        if args.command == "departments":
            return cmd_departments(cfg, args)
        if args.command == "audit":
            return cmd_audit(cfg, args)
        parser.error(f"unknown command {args.command}")
    except ConfigError as e:
        print(f"{PROG}: configuration error: {e}", file=sys.stderr)
        return 2
    except ArchiveError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line, not a traceback
        print(f"{PROG}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
