"""Real Prometheus and Alertmanager on loopback, from Debian's packages.

The binaries are ``prometheus`` and ``promtool`` (package ``prometheus``) and
``prometheus-alertmanager`` (package ``prometheus-alertmanager``; upstream calls it
``alertmanager``), installed by the project's set-up (``make prometheus``, ``.ci/run``)
where missing.  :func:`require` finds one, installing the packages once if it is missing
and the process may (root with apt-get); tests skip only when that fails too.

:class:`Prometheus` and :class:`Alertmanager` start one server each on a free loopback
port with configuration files generated into a work folder, wait until it is ready and
stop it (and only it) on exit::

    with Alertmanager(workdir, {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}) as am:
        am.alerts()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

#: binary -> Debian package holding it
PACKAGES = {"prometheus": "prometheus", "promtool": "prometheus", "prometheus-alertmanager": "prometheus-alertmanager", "amtool": "prometheus-alertmanager"}
_ALIASES = {"prometheus-alertmanager": ("prometheus-alertmanager", "alertmanager")}


class Unavailable(RuntimeError):
    """A binary is missing and could not be installed (the message says why)."""


def find(name: str) -> str | None:
    """Path of binary ``name`` (``$DRIFTLINE_<NAME>`` overrides, e.g. ``DRIFTLINE_PROMTOOL``)."""
    env = os.environ.get("DRIFTLINE_" + name.upper().replace("-", "_"))
    if env:
        return env
    for candidate in _ALIASES.get(name, (name,)):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def install(packages: list[str]) -> str | None:
    """``apt-get install`` Debian packages (without recommends: no node exporter); None on
    success, else why not.  The packages' services are not started (no init system here)."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    if os.geteuid() != 0:
        return "installing Debian packages needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # the package lists may be missing on a fresh machine
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return None if done.returncode == 0 else f"apt-get install {' '.join(packages)} failed: {done.stderr.strip()[-300:]}"


def require(name: str) -> str:
    """Path of binary ``name``, installing its Debian package first if it is missing."""
    path = find(name)
    if path:
        return path
    why = install([PACKAGES[name]])
    path = find(name)
    if path is None:
        raise Unavailable(f"{name} is not installed and could not be installed ({why or 'not found after installing'}); run `make prometheus`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, *, data: Any = None, timeout: float = 5.0) -> Any:
    """GET (or POST ``data`` as JSON) and decode the JSON answer."""
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


class _Server:
    """One server process on a loopback port, stopped (terminate, then kill) on exit."""

    binary_name = ""
    name = ""

    def __init__(self, workdir: str | Path, port: int | None = None) -> None:
        self.dir = Path(workdir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / f"{self.name}.log"

    def args(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> _Server:
        binary = require(self.binary_name)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([binary, *self.args()], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} at start-up; log: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready on {self.url} after {timeout:.0f} s; log: {self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Alertmanager(_Server):
    """Alertmanager with ``config`` (a mapping written as alertmanager.yml); clustering off."""

    binary_name = "prometheus-alertmanager"
    name = "alertmanager"

    def __init__(self, workdir: str | Path, config: dict[str, Any], port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.config_path = self.dir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no HA gossip port
            "--log.level=info",
        ]

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (Alertmanager lists alerts that have not ended)."""
        q = ("?" + urllib.parse.urlencode(filters)) if filters else ""
        return list(http_json(f"{self.url}/api/v2/alerts{q}"))


class Prometheus(_Server):
    """Prometheus with ``config`` (prometheus.yml as a mapping; ``rule_files`` are copied
    next to it) and seconds-level intervals for tests."""

    binary_name = "prometheus"
    name = "prometheus"

    def __init__(self, workdir: str | Path, config: dict[str, Any], rule_files: list[str | Path] = (), port: int | None = None, resend_delay: str = "1s") -> None:  # type: ignore[assignment]
        super().__init__(workdir, port)
        rules = []
        for f in rule_files:
            dest = self.dir / Path(f).name
            shutil.copyfile(f, dest)
            rules.append(str(dest))
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump({**config, "rule_files": rules}, sort_keys=False))
        self.resend_delay = resend_delay

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--rules.alert.resend-delay={self.resend_delay}",
            "--log.level=info",
        ]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (or raises with Prometheus's error)."""
        doc = http_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if doc.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {doc}")
        return list(doc["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(http_json(f"{self.url}/api/v1/targets")["data"]["activeTargets"])

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts of Prometheus's own rules (pending and firing)."""
        return list(http_json(f"{self.url}/api/v1/alerts")["data"]["alerts"])


def promtool(*args: str, cwd: str | Path | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``promtool`` (installed where missing); output captured."""
    return subprocess.run([require("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


__all__ = ["Alertmanager", "PACKAGES", "Prometheus", "Unavailable", "find", "free_port", "http_json", "install", "promtool", "require"]
