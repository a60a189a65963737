"""An HTTP endpoint on 127.0.0.1 that keeps the JSON bodies POSTed to it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        sink = self.server.sink
        with sink.lock:
            sink.attempts += 1
            status = sink.statuses.pop(0) if sink.statuses else 200
            if status < 300:
                sink.bodies.append(json.loads(body))
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        """Quiet: the test reads ``bodies``."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sink: WebhookSink


class WebhookSink:
    """``bodies`` it answered 2xx; ``statuses`` are answered first, in order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.attempts = 0
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.sink = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def __enter__(self) -> WebhookSink:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
