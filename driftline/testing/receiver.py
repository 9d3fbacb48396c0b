"""A loopback HTTP server that records every POST: the far end of a webhook or an
Alertmanager receiver in tests (the real client code talks to it over HTTP).

>>> import urllib.request
>>> with PostRecorder() as rec:
...     _ = urllib.request.urlopen(urllib.request.Request(f"{rec.url}/hook", data=b'{"a": 1}', method="POST"), timeout=5)
...     rec.wait(1)
...     [(p.path, p.json()) for p in rec.posts]
[('/hook', {'a': 1})]
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple


class Post(NamedTuple):
    """One recorded request: path, headers, body and arrival time (``time.monotonic()``)."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class PostRecorder:
    """Records every POST on a free loopback port; ``fail_next`` answers 503 that many times
    first (those requests are not recorded).  Stop it with :meth:`close` (or ``with``)."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.fail_next = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.fail_next > 0:
                    outer.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.posts.append(Post(self.path, dict(self.headers), body, time.monotonic()))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, n: int, timeout: float = 20.0) -> None:
        """Wait until at least ``n`` POSTs were recorded."""
        deadline = time.monotonic() + timeout
        while len(self.posts) < n:
            assert time.monotonic() < deadline, f"expected {n} POSTs, got {len(self.posts)}"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> PostRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Post", "PostRecorder"]
