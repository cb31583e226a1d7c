"""Blobs in an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Ceph RGW).

Layout under ``s3://BUCKET/PREFIX/``::

    ab/cd/abcd…                  a stored blob, named by its SHA-256
    partial/<session>/<sha256>   a multipart upload in progress, or its completed
                                 object while it is verified (a few seconds)
    quarantine/<sha256>.<time>   a stored blob that failed verification (fsck --repair)

Endpoint, region and credentials come from the standard AWS settings
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``~/.aws/config``), as for any AWS tool.

How an upload stays resumable across processes: bytes are sent to the object
store as multipart parts of a fixed size (``part_size``), each with Content-MD5
so that the store refuses a part that arrived damaged. The multipart upload's
id and the ETags of its parts are recorded in the database (``uploads``,
:class:`~archive_server.blobstores.uploads.DatabaseUploads`) after each part,
so any archive process can report the committed size (whole parts) and carry
on. Bytes after the last whole part are held in the writing process only: a
stream that breaks loses them, and the agent resends from the committed size.

What gets a blob's name is verified first: a blob that arrived in one stream
and fits in one part is hashed as it arrives and written with one PUT to its
final key (with Content-MD5); a multipart upload is completed at its partial
key, read back and hashed, and only then copied to its final key.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import logging
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any, BinaryIO, Protocol

import boto3
import botocore.config
import botocore.exceptions

from archive_server.blobstores.base import (
    PARTIAL_DIR,
    QUARANTINE_DIR,
    BlobStat,
    PartialKey,
    StoredObject,
    blob_key,
    check_session,
    check_sha,
    classify,
)
from archive_server.errors import ConfigError, DataLoss, NotFound, OutOfRange, Unavailable

log = logging.getLogger(__name__)

MIN_PART = 5 << 20  # S3's smallest part (but the last)
_BLOCK = 1 << 20
_NOT_THERE = {"404", "NoSuchKey", "NotFound"}
_UNAVAILABLE_CODES = {"500", "502", "503", "504", "SlowDown", "ServiceUnavailable", "InternalError",
                      "RequestTimeout", "RequestTimeTooSkewed", "NoSuchBucket", "AccessDenied",
                      "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}


@dataclasses.dataclass(frozen=True)
class UploadState:
    upload_id: str
    part_size: int
    etags: tuple[str, ...]  # of parts 1..n, all of part_size bytes

    @property
    def committed(self) -> int:
        return len(self.etags) * self.part_size


class UploadRegistry(Protocol):
    """Where multipart uploads in progress are recorded (the database)."""

    def get(self, key: PartialKey) -> UploadState | None: ...

    def register(self, key: PartialKey, upload_id: str, part_size: int) -> UploadState:
        """Record a new upload; when another process registered one first,
        return that one (the caller aborts its own)."""

    def add_part(self, key: PartialKey, upload_id: str, number: int, etag: str) -> bool:
        """Record part ``number``; False when the upload has moved on (another
        writer recorded it) or is gone."""

    def remove(self, key: PartialKey) -> None: ...

    def of_session(self, session_id: str) -> list[tuple[PartialKey, str]]: ...

    def older_than(self, age_s: float) -> list[tuple[PartialKey, str]]: ...


@dataclasses.dataclass(frozen=True)
class S3Options:
    part_size: int = 8 << 20
    addressing_style: str = "path"  # path | virtual | auto
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None  # None: AWS_ENDPOINT_URL or AWS's own
    max_connections: int = 64


def parse_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix without slashes)."""
    parsed = urllib.parse.urlparse(url)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    if parsed.scheme != "s3" or not bucket or parsed.query or parsed.fragment:
        raise ConfigError(f"an S3 blob store URL is s3://BUCKET[/PREFIX], got {url!r}")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ConfigError(f"bad prefix in blob store URL {url!r}")
    return bucket, prefix


class S3BlobStore:
    """See the module docstring."""

    def __init__(self, url: str, uploads: UploadRegistry | None, options: S3Options = S3Options()) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        if options.part_size < MIN_PART:
            raise ConfigError(f"blobs.part_size_mib must be at least {MIN_PART >> 20}")
        self.options = options
        self.part_size = options.part_size
        self._uploads = uploads
        session = boto3.session.Session(profile_name=options.profile or None)
        config = botocore.config.Config(
            s3={"addressing_style": options.addressing_style},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5, read_timeout=60,
            max_pool_connections=options.max_connections,
            # Content-MD5 on every write is ours; the newer default checksums are
            # not implemented by every S3-compatible store.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        try:
            self.client = session.client("s3", region_name=options.region or None,
                                         endpoint_url=options.endpoint_url or None, config=config)
        except (botocore.exceptions.BotoCoreError, ValueError) as e:
            raise ConfigError(f"cannot use blob store {self.url}: {e}") from None

    @property
    def uploads(self) -> UploadRegistry:
        if self._uploads is None:
            raise ConfigError("an S3 blob store needs the database to record uploads")
        return self._uploads

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _relative(self, key: str) -> str:
        return key[len(self.prefix) + 1:] if self.prefix else key

    # -- stored blobs -------------------------------------------------------------

    def storage_key(self, sha256: str) -> str:
        return blob_key(sha256)

    def stat(self, sha256: str) -> BlobStat | None:
        return self._head(self._key(blob_key(sha256)))

    def _head(self, key: str) -> BlobStat | None:
        try:
            with _s3_errors(f"stat {key}"):
                r = self.client.head_object(Bucket=self.bucket, Key=key)
        except NotFound:
            return None
        return BlobStat(int(r["ContentLength"]), r["LastModified"].timestamp())

    def open(self, sha256: str) -> BinaryIO:
        key = self._key(blob_key(sha256))
        with _s3_errors(f"blob {sha256} is not in the store"):
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]

    def delete(self, sha256: str) -> bool:
        key = self._key(blob_key(sha256))
        existed = self._head(key) is not None
        self._delete_all_versions(key)
        return existed

    def _delete_all_versions(self, key: str) -> None:
        # In a versioned bucket a plain delete only adds a delete marker and the
        # bytes stay: a purge (R19) removes every version of the key.
        with _s3_errors(f"delete {key}"):
            versions: list[dict[str, str]] = []
            try:
                pages = self.client.get_paginator("list_object_versions").paginate(
                    Bucket=self.bucket, Prefix=key)
                for page in pages:
                    for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                        if v["Key"] == key and v.get("VersionId") not in (None, "null"):
                            versions.append({"Key": key, "VersionId": v["VersionId"]})
            except botocore.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("NotImplemented", "501"):
                    raise
            self.client.delete_object(Bucket=self.bucket, Key=key)
            for v in versions:
                self.client.delete_object(Bucket=self.bucket, **v)

    def quarantine(self, sha256: str) -> str | None:
        source = self._key(blob_key(sha256))
        if self._head(source) is None:
            return None
        relative = f"{QUARANTINE_DIR}/{sha256}.{time.time_ns()}"
        with _s3_errors(f"quarantine {source}"):
            self.client.copy({"Bucket": self.bucket, "Key": source}, self.bucket, self._key(relative))
            self.client.delete_object(Bucket=self.bucket, Key=source)
        return relative

    def iterate(self) -> Iterator[StoredObject]:
        root = f"{self.prefix}/" if self.prefix else ""
        with _s3_errors(f"list {self.url}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root):
                for o in page.get("Contents", []):
                    relative = self._relative(o["Key"])
                    kind, sha = classify(relative)
                    yield StoredObject(relative, kind, sha, int(o["Size"]), o["LastModified"].timestamp())

    # -- partial uploads ----------------------------------------------------------

    def partial_key(self, key: PartialKey) -> str:
        check_sha(key.sha256)
        check_session(key.session_id)
        return self._key(f"{PARTIAL_DIR}/{key.session_id}/{key.sha256}")

    def committed_size(self, key: PartialKey) -> int:
        state = self.uploads.get(key)
        return state.committed if state else 0

    def begin_write(self, key: PartialKey) -> "S3Writer":
        self.partial_key(key)  # validates
        return S3Writer(self, key)

    def discard(self, key: PartialKey) -> None:
        state = self.uploads.get(key)
        if state is not None:
            self._abort(key, state.upload_id)
        self.uploads.remove(key)

    def discard_session(self, session_id: str) -> None:
        check_session(session_id)
        for key, upload_id in self.uploads.of_session(session_id):
            self._abort(key, upload_id)
            self.uploads.remove(key)

    def sweep_partials(self, max_age_s: float) -> int:
        removed = 0
        for key, upload_id in self.uploads.older_than(max_age_s):
            self._abort(key, upload_id)
            self.uploads.remove(key)
            removed += 1
        # Left behind by a process that died between two steps: an upload it
        # never recorded, or a completed partial object it never copied.
        cutoff = time.time() - max_age_s
        partial_root = self._key(PARTIAL_DIR) + "/"
        with _s3_errors(f"sweep {self.url}"):
            for page in self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.bucket, Prefix=partial_root):
                for u in page.get("Uploads", []):
                    if u["Initiated"].timestamp() < cutoff:
                        with contextlib.suppress(botocore.exceptions.ClientError):
                            self.client.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"],
                                                               UploadId=u["UploadId"])
                        removed += 1
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=partial_root):
                for o in page.get("Contents", []):
                    if o["LastModified"].timestamp() < cutoff:
                        self.client.delete_object(Bucket=self.bucket, Key=o["Key"])
                        removed += 1
        return removed

    def _abort(self, key: PartialKey, upload_id: str) -> None:
        with contextlib.suppress(NotFound), _s3_errors("abort upload"):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.partial_key(key),
                                                   UploadId=upload_id)
            except botocore.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise

    def check(self) -> None:
        with _s3_errors(f"bucket {self.bucket}"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except botocore.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") in _NOT_THERE:
                    raise Unavailable(f"blob store {self.url}: the bucket {self.bucket} does not exist") from None
                raise

    # -- used by the writer -------------------------------------------------------------

    def put_verified(self, sha256: str, data: bytes) -> str:
        """PUT bytes already hashed to ``sha256`` under their final key."""
        relative = blob_key(sha256)
        with _s3_errors(f"store blob {sha256}"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(relative), Body=data,
                                   ContentMD5=_md5(data))
        return relative

    def start_upload(self, key: PartialKey) -> UploadState:
        with _s3_errors("start a multipart upload"):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket,
                                                            Key=self.partial_key(key))["UploadId"]
        state = self.uploads.register(key, upload_id, self.part_size)
        if state.upload_id != upload_id:  # another process started one first: use that one
            self._abort(key, upload_id)
        return state

    def upload_part(self, key: PartialKey, upload_id: str, number: int, data: bytes) -> str:
        with _s3_errors("upload a part"):
            try:
                r = self.client.upload_part(Bucket=self.bucket, Key=self.partial_key(key), UploadId=upload_id,
                                            PartNumber=number, Body=data, ContentMD5=_md5(data))
            except botocore.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    # Completed or discarded by another writer of this blob.
                    raise OutOfRange("the upload was finished or discarded by another Write; "
                                     "ask QueryWriteStatus", self.committed_size(key)) from None
                raise
        return str(r["ETag"])

    def complete_verified(self, key: PartialKey, state: UploadState, sha256: str, size: int) -> str:
        """Complete the multipart upload at the partial key, read it back and
        hash it, and copy it to its final key. DataLoss (partial discarded) on
        a mismatch."""
        partial = self.partial_key(key)
        parts = [{"PartNumber": i + 1, "ETag": etag} for i, etag in enumerate(state.etags)]
        with _s3_errors("complete a multipart upload"):
            try:
                self.client.complete_multipart_upload(Bucket=self.bucket, Key=partial, UploadId=state.upload_id,
                                                      MultipartUpload={"Parts": parts})
            except botocore.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("NoSuchUpload", "InvalidPart"):
                    raise OutOfRange("the upload was finished or discarded by another Write; "
                                     "ask QueryWriteStatus", 0) from None
                raise
        self.uploads.remove(key)
        try:
            digest = hashlib.sha256()
            stored = 0
            with _s3_errors("read back a completed upload"):
                body = self.client.get_object(Bucket=self.bucket, Key=partial)["Body"]
                with body:
                    while block := body.read(_BLOCK):
                        digest.update(block)
                        stored += len(block)
            if stored != size or digest.hexdigest() != sha256:
                what = (f"{stored} bytes received, {size} declared" if stored != size
                        else f"received bytes hash to {digest.hexdigest()}")
                raise DataLoss(f"blob {sha256}: {what}; the partial upload was discarded, send it again")
            relative = blob_key(sha256)
            with _s3_errors(f"store blob {sha256}"):
                self.client.copy({"Bucket": self.bucket, "Key": partial}, self.bucket, self._key(relative))
        finally:
            with contextlib.suppress(Unavailable), _s3_errors("remove a partial"):
                self.client.delete_object(Bucket=self.bucket, Key=partial)
        return relative


class S3Writer:
    """A Write stream into a multipart upload; see the module docstring."""

    def __init__(self, store: S3BlobStore, key: PartialKey) -> None:
        self.store = store
        self.key = key
        self.state = store.uploads.get(key)
        if self.state is not None and self.state.part_size != store.part_size:
            # Begun by a process configured with another part size: start over.
            store.discard(key)
            self.state = None
        self._committed = self.state.committed if self.state else 0
        self._buffer = bytearray()
        # Hashes [0, offset) when this stream saw every byte from the start.
        self._digest = hashlib.sha256() if self._committed == 0 else None
        self._done = False

    @property
    def committed_size(self) -> int:
        return self._committed

    @property
    def offset(self) -> int:
        return self._committed + len(self._buffer)

    def write(self, offset: int, data: bytes) -> None:
        if offset != self.offset:
            committed = self.store.committed_size(self.key)
            raise OutOfRange(f"write at offset {offset}, but the committed size is {committed}", committed)
        self._buffer += data
        if self._digest is not None:
            self._digest.update(data)
        part = self.store.part_size
        while len(self._buffer) >= part:
            self._send_part(bytes(self._buffer[:part]))
            del self._buffer[:part]

    def _send_part(self, data: bytes) -> None:
        if self.state is None:
            self.state = self.store.start_upload(self.key)
            if self.state.etags or self.state.part_size != self.store.part_size:
                raise OutOfRange("another Write of this blob is ahead; ask QueryWriteStatus",
                                 self.state.committed)
        number = self._committed // self.store.part_size + 1
        etag = self.store.upload_part(self.key, self.state.upload_id, number, data)
        if not self.store.uploads.add_part(self.key, self.state.upload_id, number, etag):
            raise OutOfRange("another Write of this blob moved on; ask QueryWriteStatus",
                             self.store.committed_size(self.key))
        self.state = dataclasses.replace(self.state, etags=(*self.state.etags, etag))
        self._committed += len(data)

    def commit(self, sha256: str, size: int) -> str:
        check_sha(sha256)
        self._done = True
        if self.offset != size:
            self.store.discard(self.key)
            raise DataLoss(f"blob {sha256}: {self.offset} bytes received, {size} declared; "
                           "the partial upload was discarded, send it again")
        if self.state is None:
            assert self._digest is not None
            if self._digest.hexdigest() != sha256:
                raise DataLoss(f"blob {sha256}: received bytes hash to {self._digest.hexdigest()}; "
                               "nothing was stored, send it again")
            return self.store.put_verified(sha256, bytes(self._buffer))
        if self._buffer:  # the last part may be short
            number = self._committed // self.store.part_size + 1
            etag = self.store.upload_part(self.key, self.state.upload_id, number, bytes(self._buffer))
            self.state = dataclasses.replace(self.state, etags=(*self.state.etags, etag))
        try:
            return self.store.complete_verified(self.key, self.state, sha256, size)
        except DataLoss:
            self.store.discard(self.key)
            raise

    def __enter__(self) -> "S3Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        # Bytes after the last whole part are not durable and are dropped here;
        # QueryWriteStatus reports the whole parts.
        self._buffer = bytearray()


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


@contextlib.contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """The store down, overloaded or refusing us: Unavailable (retry later);
    a missing object: NotFound."""
    try:
        yield
    except botocore.exceptions.ClientError as e:
        error: dict[str, Any] = e.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _NOT_THERE or status == "404" and code not in ("NoSuchBucket", "NoSuchUpload"):
            raise NotFound(what) from None
        if code in _UNAVAILABLE_CODES or status in _UNAVAILABLE_CODES:
            raise Unavailable(f"blob store cannot serve ({what}): {code or status}: "
                              f"{error.get('Message', '')}") from e
        raise
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError,
            botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError) as e:
        raise Unavailable(f"blob store cannot serve ({what}): {e}") from e
