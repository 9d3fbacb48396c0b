"""A real S3-compatible endpoint on loopback for tests: moto's standalone server in its own
process (the ``moto[server]`` test extra), on a free port, stopped on exit.

The sinks talk to it over HTTP with s3fs exactly as to any S3 service, so the commit
protocol, ``verify``, ``query`` and ``compact`` are exercised on a store without rename
or link.

>>> LocalS3.storage_options_for("http://127.0.0.1:9")["endpoint_url"]
'http://127.0.0.1:9'
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalS3:
    """``with LocalS3() as s3: s3.create_bucket("b"); root = "s3://b/prefix"``."""

    def __init__(self, port: int | None = None, *, log_file: str | Path | None = None) -> None:
        self.port = port or _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def storage_options_for(endpoint: str) -> dict[str, str]:
        """``sinks.storage_options`` for s3fs against ``endpoint``: no credentials
        (those are ``sinks.storage_secrets``, see :attr:`secrets_env`)."""
        return {"endpoint_url": endpoint}

    @property
    def storage_options(self) -> dict[str, str]:
        return self.storage_options_for(self.endpoint)

    @property
    def secrets_env(self) -> dict[str, str]:
        """The test credentials as ``sinks.storage_secrets`` environment variables."""
        return {"DRIFTLINE__SINKS__STORAGE_SECRETS__KEY": ACCESS_KEY, "DRIFTLINE__SINKS__STORAGE_SECRETS__SECRET": SECRET_KEY}

    @property
    def fsspec_options(self) -> dict[str, str]:
        """What the file system is opened with: endpoint and credentials."""
        return {**self.storage_options, "key": ACCESS_KEY, "secret": SECRET_KEY}

    def start(self, timeout: float = 60.0) -> str:
        out: Any = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with status {self._proc.returncode} (port {self.port})")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1.0)
                return self.endpoint
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} within {timeout:.0f} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def create_bucket(self, name: str) -> None:
        import s3fs

        fs = s3fs.S3FileSystem(**self.fsspec_options)  # type: ignore[arg-type]
        fs.mkdir(name)

    def __enter__(self) -> LocalS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
