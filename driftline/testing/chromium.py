"""Headless Chromium driven over the DevTools protocol on a pipe (no port, no extra package).

Used by the report test and ``make report-screenshot``: open a local HTML file, collect
console messages and uncaught exceptions, evaluate a script in the page, and take a
full-page PNG screenshot.  The browser is Debian's ``chromium`` (installed by
``.ci/run`` / ``make chromium`` where missing), started with a fresh profile and with
every background network feature off; it is always stopped on exit.

    python -m driftline.testing.chromium report.html report.png
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """Path of the Chromium binary (``$DRIFTLINE_CHROMIUM``, else chromium on PATH)."""
    env = os.environ.get("DRIFTLINE_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class ChromiumError(RuntimeError):
    """The browser could not be started or a DevTools command failed."""


class Chromium:
    """One headless browser and one page; use as a context manager."""

    def __init__(self, binary: str | None = None, *, width: int = 1280, height: int = 900, timeout: float = 60.0) -> None:
        self.binary = binary or find_chromium()
        if not self.binary:
            raise ChromiumError("chromium not found: install Debian's chromium package (make chromium)")
        self.width, self.height, self.timeout = width, height, timeout
        self.console: list[dict[str, Any]] = []
        self.exceptions: list[str] = []
        self._ids = itertools.count(1)
        self._buf = b""
        self._session: str | None = None

    def __enter__(self) -> Chromium:
        self._profile = tempfile.mkdtemp(prefix="driftline-chromium-")
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # the browser reads commands on fd 3 and writes replies on fd 4
        self._proc = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={self.width},{self.height}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=lambda: (os.dup2(to_browser_r, 3), os.dup2(from_browser_w, 4)),  # noqa: PLW0108
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._w, self._r = to_browser_w, from_browser_r
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        target_id = page["targetId"] if page else self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target_id, flatten=True)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(domain, session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.width, height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call("Browser.close")
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    # -- protocol ---------------------------------------------------------------------

    def _send(self, msg: dict[str, Any]) -> None:
        os.write(self._w, json.dumps(msg).encode() + b"\0")

    def _recv(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChromiumError("timed out waiting for the browser")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise ChromiumError("the browser closed its DevTools pipe (did it crash?)")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg = json.loads(raw)
        self._observe(msg)
        return msg

    def _observe(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        if method == "Runtime.consoleAPICalled":
            p = msg["params"]
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.console.append({"level": p.get("type"), "text": text})
        elif method == "Log.entryAdded":
            e = msg["params"]["entry"]
            self.console.append({"level": e.get("level"), "text": e.get("text", ""), "url": e.get("url")})
        elif method == "Runtime.exceptionThrown":
            d = msg["params"]["exceptionDetails"]
            self.exceptions.append(d.get("exception", {}).get("description") or d.get("text", "exception"))

    def call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self._session
        self._send(msg)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise ChromiumError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._recv(deadline)
            if msg.get("method") == method:
                return msg.get("params", {})

    # -- page -------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self.call("Page.navigate", session=True, url=url)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise ChromiumError(f"script failed: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def screenshot(self, path: str | Path) -> Path:
        """A PNG of the whole page (not only the viewport)."""
        metrics = self.call("Page.getLayoutMetrics", session=True)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = self.call(
            "Page.captureScreenshot",
            session=True,
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": self.width, "height": int(size["height"]), "scale": 1},
        )
        out = Path(path)
        out.write_bytes(base64.b64decode(shot["data"]))
        return out


PLOT_CHECK = """(() => {
  const figs = [...document.querySelectorAll('figure.plot')];
  return figs.map(f => {
    const svg = f.querySelector('svg'); const canvas = f.querySelector('canvas');
    const box = (svg || canvas) ? (svg || canvas).getBoundingClientRect() : {width: 0, height: 0};
    const shapes = svg ? svg.querySelectorAll('path, rect, use, line, polyline, polygon, circle').length : 0;
    return {name: f.dataset.plot, empty: f.dataset.empty === 'true', width: box.width, height: box.height, shapes: shapes};
  });
})()"""


def check_page(html_file: str | Path, screenshot: str | Path | None = None, *, width: int = 1280) -> dict[str, Any]:
    """Open ``html_file`` headless and report every plot's drawn size and shapes, console errors
    and uncaught exceptions; optionally save a full-page screenshot."""
    with Chromium(width=width) as browser:
        browser.open(Path(html_file).resolve().as_uri())
        plots = browser.evaluate(PLOT_CHECK)
        title = browser.evaluate("document.title")
        if screenshot is not None:
            browser.screenshot(screenshot)
        errors = [c for c in browser.console if c.get("level") in ("error", "assert")]
        return {"title": title, "plots": plots, "console_errors": errors, "exceptions": list(browser.exceptions)}


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) not in (1, 2):
        print("usage: python -m driftline.testing.chromium PAGE.html [SHOT.png]", file=sys.stderr)
        return 2
    result = check_page(args[0], args[1] if len(args) == 2 else None)
    print(json.dumps(result, indent=2))
    bad = result["console_errors"] or result["exceptions"] or any(p["width"] <= 0 or p["shapes"] == 0 for p in result["plots"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
