"""The archive's records (SQLAlchemy 2, typed declarative).

Access control (R15, R16): departments, roles (named sets of the dotted rights
in ``authz.RIGHTS``), users with one role per department. Cases (R13, R14)
keep every version; forms are shared templates. Confidential patients (R17),
consents (R20) and the hash-chained audit log (R18) complete the model.

Portable between SQLite and PostgreSQL: ids are UUID strings, JSON columns hold
structured facts, times are stored timezone-aware UTC. The schema is made and
changed by the Alembic migrations in ``migrations/versions/`` (``schema.py``):
a change here needs a migration, and a test fails until the two agree.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        dt.datetime: DateTime(timezone=True),
    }


class Department(Base):
    """R15: one organisational level, named by its HSA-id."""

    __tablename__ = "departments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hsa_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # How the department came to be: "admin" (departments add) or "auto" (first ingest).
    registered_by: Mapped[str] = mapped_column(String(32), default="admin")


class Agent(Base):
    """A capture PC's agent, as last seen by the archive (R21)."""

    __tablename__ = "agents"

    agent_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    version: Mapped[str] = mapped_column(String(64), default="")
    first_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AgentBinding(Base):
    """Issue 10: the one certificate (by the SHA-256 fingerprint of its DER
    bytes) whose holder is this agent of this department. On a TLS archive
    every agent call is judged by it, never by what the request says.
    Binding a new certificate replaces the old one (key rotation); a revoked
    binding refuses every call until the agent is bound again."""

    __tablename__ = "agent_bindings"

    agent_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    # What the certificate says, for people: its subject and when it expires.
    subject: Mapped[str] = mapped_column(String(1024), default="")
    not_after: Mapped[dt.datetime | None] = mapped_column()
    bound_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    bound_by: Mapped[str] = mapped_column(String(255))
    revoked_at: Mapped[dt.datetime | None] = mapped_column()
    revoked_by: Mapped[str | None] = mapped_column(String(255))

    department: Mapped[Department] = relationship()


class IngestSession(Base):
    """One card: the OpenSession request as received, and its outcome."""

    __tablename__ = "ingest_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36), unique=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.agent_id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    patient_id: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))
    ehr_context: Mapped[bool] = mapped_column(Boolean, default=False)
    manifest: Mapped[list[Any]] = mapped_column()
    evidence: Mapped[list[Any]] = mapped_column()
    # SHA-256 over the request content (agent_version excluded): the idempotency check.
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | committed
    case_id: Mapped[str | None] = mapped_column(ForeignKey("cases.id"), unique=True)
    opened_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    committed_at: Mapped[dt.datetime | None] = mapped_column()


class SessionBlob(Base):
    """A blob whose bytes this session sent and the archive verified. Dedup
    never crosses a department (issue 10): a session may skip a blob's bytes
    only when its department already holds the blob (in one of its cases) or
    the session itself sent them; knowing another department's sha256 is not
    enough. Underneath, the bytes are still stored once."""

    __tablename__ = "session_blobs"

    session_id: Mapped[str] = mapped_column(ForeignKey("ingest_sessions.session_id"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Blob(Base):
    """A durably stored blob (content addressed). A row is written only after
    the bytes were made durable and verified under their final name, and it is
    never proof on its own that they still are: ``archive_server.blobs``
    confirms with the store. ``state`` "purging" is the tombstone of a purge
    (R19) in progress: the bytes are being deleted, nothing may adopt them."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(255))
    stored_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default="stored", server_default="stored")


class BlobUpload(Base):
    """A multipart upload in progress in an object store (``blobstores.s3``):
    one session's upload of one blob, its upload id and the ETags of the whole
    parts sent so far, so that any archive process can resume it."""

    __tablename__ = "blob_uploads"
    __table_args__ = (UniqueConstraint("session_id", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36))
    sha256: Mapped[str] = mapped_column(String(64))
    upload_id: Mapped[str] = mapped_column(String(1024))
    part_size: Mapped[int] = mapped_column(BigInteger)
    part_count: Mapped[int] = mapped_column(Integer, default=0)
    etags: Mapped[list[Any]] = mapped_column(default=list)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    touched_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class Case(Base):
    """R13: media of one patient in one department. ``patient_id``, ``status``
    and ``current_version`` mirror the latest version (what search answers
    with); ``confidential`` is set while the patient of any version is in
    ``confidential_patients`` (R17)."""

    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(32), index=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    status: Mapped[str] = mapped_column(String(16), default="unsigned")
    confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    # The ingest session the case came from; unique so that a session can never
    # become two cases, even if two commits race past the row lock.
    source_session_id: Mapped[str | None] = mapped_column(String(36), unique=True)

    department: Mapped[Department] = relationship()
    versions: Mapped[list["CaseVersion"]] = relationship(
        back_populates="case", order_by="CaseVersion.version"
    )


class CaseVersion(Base):
    """R14: one version of a case. ``fields`` holds the capture facts (mode,
    capture times, devices, files, identity evidence, EHR context), never file
    metadata (R7); ``form`` the form data, checked against ``form_template``.
    A signed version never changes; revising it makes the next version."""

    __tablename__ = "case_versions"
    __table_args__ = (UniqueConstraint("case_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255), default="")
    fields: Mapped[dict[str, Any]] = mapped_column()
    patient_id: Mapped[str | None] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), default="unsigned")  # unsigned | signed
    # Why this version exists (empty for the ingested first version).
    reason: Mapped[str] = mapped_column(Text, default="")
    signed_by: Mapped[str | None] = mapped_column(String(255))
    signed_at: Mapped[dt.datetime | None] = mapped_column()
    form_template: Mapped[str | None] = mapped_column(String(64))
    form: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Who last edited this (unsigned) version in place, and when.
    edited_by: Mapped[str | None] = mapped_column(String(255))
    edited_at: Mapped[dt.datetime | None] = mapped_column()
    # The annotation layer (issue 11): media SHA-256 -> shapes (arrow, circle,
    # text, length) in coordinates relative to the picture; never burned into
    # the stored file, versioned like the form (annotations.py).
    annotations: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    case: Mapped[Case] = relationship(back_populates="versions")
    media: Mapped[list["MediaItem"]] = relationship(
        back_populates="case_version", order_by="MediaItem.position"
    )


class TeachingItem(Base):
    """R20: a picture of the teaching collection: a de-identified teaching copy
    (made from a case with recorded consent) or other non-patient material.
    Deliberately without a link to any case or patient; which case a copy was
    made from is in the audit log only (``case.teaching_copy``, ``teaching.added``)."""

    __tablename__ = "teaching_items"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    blob_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    media_type: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200), default="")
    source: Mapped[str] = mapped_column(String(16))  # teaching_copy | information
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255))


class MediaItem(Base):
    """One file of a case version: a reference to a blob plus the facts that
    would otherwise have been file metadata (R7)."""

    __tablename__ = "media_items"
    __table_args__ = (UniqueConstraint("case_version_id", "relative_path"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_version_id: Mapped[int] = mapped_column(ForeignKey("case_versions.id"))
    # Indexed: "does this department hold the blob" (dedup) and purge ask by blob.
    blob_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), index=True)
    relative_path: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[str] = mapped_column(String(16))
    media_type: Mapped[str] = mapped_column(String(128))
    capture_time: Mapped[dt.datetime | None] = mapped_column()
    device_make: Mapped[str] = mapped_column(String(255), default="")
    device_model: Mapped[str] = mapped_column(String(255), default="")
    device_serial: Mapped[str] = mapped_column(String(255), default="")
    position: Mapped[int] = mapped_column(Integer)

    case_version: Mapped[CaseVersion] = relationship(back_populates="media")
    blob: Mapped[Blob] = relationship()


class AuditEvent(Base):
    """R18: one entry of the append-only audit log, chained by SHA-256: each
    event's hash covers its content and the previous event's hash, so an edited,
    removed or inserted row breaks the chain (``audit.verify_audit_chain``).
    Who (``actor``), what (``action`` on ``target``), where (``department``),
    whose (``patient``), why, and the ``outcome``: permitted, refused or failed."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(255), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    case_id: Mapped[str | None] = mapped_column(String(36), index=True)
    details: Mapped[dict[str, Any]] = mapped_column()
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    target: Mapped[str | None] = mapped_column(String(255))
    department: Mapped[str | None] = mapped_column(String(64), index=True)
    patient: Mapped[str | None] = mapped_column(String(32), index=True)
    why: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16), default="permitted")


class AuditHead(Base):
    """The single row naming the chain's last event. Appends lock it (row lock on
    PostgreSQL, the write lock on SQLite), which serialises them."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")


class Role(Base):
    """R16: a named set of rights. ``builtin`` roles (sysadmin, log-operator)
    are created with the schema and cannot be changed."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    rights: Mapped[list[Any]] = mapped_column()
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class User(Base):
    """A person using the archive. They log in (``logins.py``) with a local
    password (an Argon2id hash, ``admin user passwd``) or through the region's
    identity provider, whose configured claim (the HSA-id, say) is linked to
    the user as ``idp_subject`` (``admin user link``); the system administrator
    on the archive host names them with ``--as``."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    password_set_at: Mapped[dt.datetime | None] = mapped_column()
    idp_subject: Mapped[str | None] = mapped_column(String(255), unique=True)


class DepartmentAccess(Base):
    """R16: a user's access to one department, with one role there."""

    __tablename__ = "department_access"
    __table_args__ = (UniqueConstraint("user_id", "department_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id"))
    granted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    department: Mapped[Department] = relationship()
    role: Mapped[Role] = relationship()


class ConfidentialPatient(Base):
    """R17: a patient whose cases (present and future) are confidential."""

    __tablename__ = "confidential_patients"

    patient_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    marked_by: Mapped[str] = mapped_column(String(255))
    marked_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class FormTemplate(Base):
    """R13: a form shared across departments. ``fields`` is a list of
    ``{"name", "type", "required", "label"}`` (see ``forms.FIELD_TYPES``)."""

    __tablename__ = "form_templates"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(255))
    fields: Mapped[list[Any]] = mapped_column()
    created_by: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Consent(Base):
    """R20: a patient's written consent to teaching use, recorded with a case:
    the scanned document (a blob) and who recorded it when."""

    __tablename__ = "consents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), index=True)
    blob_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    document_name: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(128))
    recorded_by: Mapped[str] = mapped_column(String(255))
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AgentStatus(Base):
    """The latest heartbeat of one agent: a snapshot, replaced by each heartbeat."""

    __tablename__ = "agent_status"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.agent_id"), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    state: Mapped[str] = mapped_column(String(16), default="idle")
    queue_length: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    in_progress: Mapped[list[Any]] = mapped_column(default=list)
    interval_s: Mapped[float] = mapped_column(Float, default=5.0)
    archive_reachable: Mapped[bool] = mapped_column(Boolean, default=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_heartbeat: Mapped[dt.datetime] = mapped_column(default=utcnow)
    heartbeats: Mapped[int] = mapped_column(BigInteger, default=0)
    # The agent's clock minus the archive's at the last heartbeat, in seconds
    # (None: the heartbeat carried no sent_at).
    clock_skew_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The agent's spool: bytes free on its file system and bytes held (None: not reported).
    spool_free_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    spool_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class AgentHistory(Base):
    """What changed in an agent's heartbeats, for its ops page (R21): it
    started, came back after a silence, changed state or version, reported a
    new error. ``detail`` holds codes and counts, never a patient. The newest
    ``agents.HISTORY_KEPT`` per agent are kept."""

    __tablename__ = "agent_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.agent_id"), index=True)
    at: Mapped[dt.datetime] = mapped_column()
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DepartmentDevice(Base):
    """R6: one registered capture device of a department, as the agents of
    that department receive it with each heartbeat answer. ``make``, ``model``
    and ``serial`` are kept as typed (spaces collapsed); matching is the
    agent's (case- and space-insensitive); an empty serial accepts any."""

    __tablename__ = "department_devices"
    __table_args__ = (UniqueConstraint("department_id", "make_key", "model_key", "serial_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    make: Mapped[str] = mapped_column(String(255))
    model: Mapped[str] = mapped_column(String(255))
    serial: Mapped[str] = mapped_column(String(255), default="")
    # Case-folded forms: one device is registered once however it is typed.
    make_key: Mapped[str] = mapped_column(String(255))
    model_key: Mapped[str] = mapped_column(String(255))
    serial_key: Mapped[str] = mapped_column(String(255), default="")
    added_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    added_by: Mapped[str] = mapped_column(String(255))


class AgentRefusal(Base):
    """One refused card as reported by an agent (reason code, no patient)."""

    __tablename__ = "agent_refusals"
    __table_args__ = (UniqueConstraint("agent_id", "card_key", "refused_at_ms"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.agent_id"), index=True)
    card_key: Mapped[str] = mapped_column(String(255))
    reader: Mapped[str] = mapped_column(String(255), default="")
    reason: Mapped[str] = mapped_column(String(64))
    # Milliseconds since the epoch: the exact, portable de-duplication key.
    refused_at_ms: Mapped[int] = mapped_column(BigInteger)
    refused_at: Mapped[dt.datetime] = mapped_column()
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class UserSession(Base):
    """A logged-in user's session: the bearer token's SHA-256 (the token itself
    is never stored), how they logged in and from where, and when it ends.
    Shared by every archive process on the database, so that a token issued by
    one is honoured (and its logout seen) by all."""

    __tablename__ = "user_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    method: Mapped[str] = mapped_column(String(16))  # local | oidc
    origin: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    last_used_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column()

    user: Mapped[User] = relationship()


class LoginThrottle(Base):
    """Failed logins counted per key (``user:NAME`` or ``addr:IP``) within a
    window; at the limit the key is blocked until ``blocked_until`` (a
    cool-down, never a permanent lock-out)."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[dt.datetime] = mapped_column(default=utcnow)
    blocked_until: Mapped[dt.datetime | None] = mapped_column()


class OidcLogin(Base):
    """An OpenID Connect authorization request in flight: the state's SHA-256,
    the nonce and PKCE verifier sent with it, and where to go afterwards.
    Used once; requests older than a few minutes are refused and removed."""

    __tablename__ = "oidc_logins"

    state_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    next_path: Mapped[str] = mapped_column(String(1024), default="/")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
