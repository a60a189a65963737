"""A real HTTPS stand-in for the management server's sync endpoint, on 127.0.0.1.

It speaks the contract of ``epns.sync_contract``: a POST to an agent's sync
path is decoded as a report and answered 204, a GET is answered with
``reply`` (in the format the agent accepts, unless ``reply_format`` forces
one). Every request is recorded with the client certificate's CN. Scripted
answers (429 with Retry-After, 401, slow ones, anything) are served first, in
order. Handlers run in threads; the server runs until ``close``.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from epns import pki
from epns.errors import MalformedMessage
from epns.sync_contract import (
    SyncFormat,
    SyncReply,
    SyncReport,
    decode_report,
    encode_reply,
    format_of,
)
from epns.tls import server_context


@dataclass(frozen=True)
class Answer:
    """A scripted answer; ``delay`` holds it back (released early by ``close``)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it; ``report`` when a POST body decoded."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_cn: str | None
    report: SyncReport | None = None
    error: str | None = None


class SyncServer:
    """Start on an ephemeral port; use as a context manager, or call ``close``."""

    def __init__(self, pki_dir: Path,
                 client_certs: Literal["optional", "required"] = "optional") -> None:
        context = server_context(pki_dir / pki.BROKER_CERT, pki_dir / pki.BROKER_KEY,
                                 pki_dir / pki.CA_CERT)
        if client_certs == "required":
            context.verify_mode = ssl.CERT_REQUIRED
        self.requests: list[Recorded] = []
        self.handshake_errors: list[str] = []
        self.reply = SyncReply()
        self.reply_format: SyncFormat | None = None
        self._script: list[Answer] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = _TLSServer(self, context)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL, i.e. what ``sync.url`` holds."""
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    def script(self, *answers: Answer) -> None:
        """Serve these answers to the next requests, before the normal ones."""
        with self._lock:
            self._script.extend(answers)

    def methods(self) -> list[str]:
        """The methods of the requests so far, in order."""
        return [request.method for request in self.requests]

    def close(self) -> None:
        """Stop serving; slow answers still waiting are released."""
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> SyncServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes,
               client_cn: str | None) -> Answer:
        """Record the request and decide the answer (called by the handler thread)."""
        with self._lock:
            scripted = self._script.pop(0) if self._script else None
        recorded, normal = self._normal(method, path, headers, body, client_cn)
        self.requests.append(recorded)
        answer = scripted or normal
        if answer.delay:
            self._closing.wait(answer.delay)
        return answer

    def _normal(self, method: str, path: str, headers: dict[str, str], body: bytes,
                client_cn: str | None) -> tuple[Recorded, Answer]:
        recorded = Recorded(method, path, headers, body, client_cn)
        if not path.endswith("/sync"):
            return recorded, Answer(404)
        if method == "GET":
            fmt = self.reply_format or _format(headers.get("accept"))
            return recorded, Answer(200, {"Content-Type": fmt.content_type},
                                    encode_reply(self.reply, fmt))
        try:
            report = decode_report(body, _format(headers.get("content-type")))
        except MalformedMessage as exc:
            return (Recorded(method, path, headers, body, client_cn, error=str(exc)),
                    Answer(400, {"Content-Type": "text/plain"}, str(exc).encode()))
        return Recorded(method, path, headers, body, client_cn, report), Answer(204)


def _format(content_type: str | None) -> SyncFormat:
    try:
        return format_of(content_type or "")
    except MalformedMessage:
        return SyncFormat.JSON


class _TLSServer(ThreadingHTTPServer):
    """Each connection's TLS handshake runs in its handler thread, so a client
    that never finishes one cannot stall the accept loop."""

    daemon_threads = True

    def __init__(self, owner: SyncServer, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.owner.handshake_errors.append(str(exc))
            return
        with tls:
            super().finish_request(tls, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up on a slow answer breaks the pipe: expected here.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TLSServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test reads the recorded requests instead

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = self.server.owner.answer(self.command, self.path, headers, body, self._cn())
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def _cn(self) -> str | None:
        assert isinstance(self.connection, ssl.SSLSocket)
        der = self.connection.getpeercert(binary_form=True)
        if der is None:
            return None
        names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME)
        return str(names[0].value) if names else None
