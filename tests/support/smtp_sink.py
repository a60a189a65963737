"""A minimal SMTP server on 127.0.0.1 that keeps the messages it receives.

Python 3.12 removed ``smtpd`` (3.11 warns, and the suite turns warnings into
errors) and aiosmtpd is not a dependency; this speaks just enough SMTP for
``smtplib``: HELO/EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
"""

from __future__ import annotations

import email
import socketserver
import threading
from email.message import Message
from typing import Any


class _Session(socketserver.StreamRequestHandler):
    server: _Server

    def _say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self._say("220 sink ESMTP")
        while line := self.rfile.readline():
            verb = line.decode(errors="replace").strip().split(" ", 1)[0].upper()
            if verb == "QUIT":
                self._say("221 bye")
                return
            if verb == "DATA":
                self._data()
            elif verb in ("HELO", "EHLO", "MAIL", "RCPT", "RSET", "NOOP"):
                self._say("250 ok")
            else:
                self._say("502 not implemented")

    def _data(self) -> None:
        self._say("354 end with <CRLF>.<CRLF>")
        lines = []
        while (line := self.rfile.readline()) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)
        sink = self.server.sink
        with sink.lock:
            if sink.refuse > 0:
                sink.refuse -= 1
                self._say("451 try again later")
                return
            sink.messages.append(email.message_from_bytes(b"".join(lines)))
        self._say("250 queued")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    sink: SmtpSink


class SmtpSink:
    """``messages`` it accepted; ``refuse`` = how many DATA to answer 451."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refuse = 0
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Session)
        self._server.sink = self
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def __enter__(self) -> SmtpSink:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
