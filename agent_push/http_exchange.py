"""The HTTP exchange of one sync, in the agent's process: HTTP/1.1 with h11.

The agent runs for months and its idle memory has a target (40 MB), so its
HTTP client is small: h11, the sans-IO HTTP/1.1 state machine (about 0.5 MiB),
driven over asyncio streams that ``agent_push.dialer`` opens the way it opens
MQTT's (TCP or an HTTP CONNECT tunnel, then TLS offering ALPN ``http/1.1``),
with the same words for the same failures. httpx would have kept httpcore,
anyio and h11 in memory after the first sync (about 4 MiB); running it in a
child process per sync cost 0.17 s and 0.17 CPU-seconds a sync, and seconds
when many agents on one machine woke at once (bench/README.md).

One exchange: POST the encoded report, retrying busy answers (429/503) after
Retry-After or with backoff, then GET the server's reply when ``fetch`` is on,
both on one keep-alive connection when the server keeps it open. Every step
has its timeout (connect, TLS, send, each read of the answer); a failure is an
``ExchangeResult`` whose ``error`` says why, never an exception. The caller
(``agent_push.sync.HttpSync``) bounds the whole and cancels it when the agent
stops: the connection is then dropped at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import h11

from agent_push.dialer import open_stream
from epns import __version__, tls
from epns.agent_config import TimeoutSettings
from epns.errors import ConfigError, RouteError, SyncFailed
from epns.logs import event
from epns.routes import PathFault, fault_of, parse_proxy
from epns.sync_contract import MAX_BYTES, SyncFormat, retry_after_seconds

log = logging.getLogger(__name__)

# The answers that mean "busy, come back later".
RETRYABLE = frozenset({429, 503})
# An error answer is read this far for the server's reason, which the log
# line keeps this long.
MAX_ERROR_BYTES = 4096
MAX_REASON = 300
# Without Retry-After, wait n is drawn from [0, BACKOFF_BASE * 2**n] (full jitter).
BACKOFF_BASE = 1.0
# On top of a Retry-After, up to this fraction more (at least a second), so the
# agents a busy server told the same time do not all come back at once.
RETRY_JITTER = 0.25
MIN_RETRY_JITTER = 1.0
# Bytes asked of the stream per read.
READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class ExchangeJob:
    """One exchange: the encoded report, where it goes (``proxy_url``: the
    way, None for direct), the identity (client certificate files, or a
    bearer ``token``) and the retry settings."""

    url: str
    server: str
    format: str
    body: bytes
    fetch: bool
    ca: Path | None
    cert: Path | None
    key: Path | None
    token: str | None
    proxy_url: str | None
    timeout: float
    # The connection's steps (TCP, the proxy's CONNECT, TLS), bounded as push's are.
    timeouts: TimeoutSettings
    max_retries: int
    max_retry_after: float
    # The POST's own answer is what the caller wants (an identity renewal):
    # read whole and returned as ``reply``.
    answered: bool = False


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    """How the exchange ended. ``posted``: the server accepted the report.
    On success, ``status``, ``content_type`` and ``reply`` are the last
    answer's (the GET's when ``fetch`` is on). On failure, ``error`` says why
    in plain words, ``http_status`` is the status that ended it and, when a
    busy server said when to come back, ``retry_after`` is that wait (s)."""

    posted: bool
    status: int | None = None
    reply: bytes | None = None
    content_type: str | None = None
    error: str | None = None
    http_status: int | None = None
    retry_after: float | None = None
    # What the failure says about the way to the server: the agent then
    # tries the sync's other way, and tells its MQTT side.
    fault: PathFault | None = None


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    retry_after: str | None
    content_type: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where the sync URL points: what the connection and the request need."""

    tls: bool
    host: str
    port: int
    authority: str
    target: str


async def exchange(job: ExchangeJob, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                   rng: random.Random | None = None) -> ExchangeResult:
    """POST the job's report, then GET the reply when ``fetch`` is on; a
    failure is a result whose ``error`` says why, never an exception."""
    try:
        origin = _origin(job.url)
        context = _context(job) if origin.tls else None
    except ConfigError as exc:
        return ExchangeResult(posted=False, error=str(exc))
    run = _Exchange(job, origin, context, sleep,
                    rng or random.Random())  # noqa: S311 (jitter, not a secret)
    try:
        return await run.steps()
    finally:
        run.drop()


def _origin(url: str) -> _Origin:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"sync.url {url!r}: {exc}") from exc
    secure = parts.scheme == "https"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Origin(secure, parts.hostname or "", port or (443 if secure else 80),
                   parts.netloc.rpartition("@")[2], target)


def _context(job: ExchangeJob) -> ssl.SSLContext:
    context = tls.client_context(job.ca, job.cert, job.key)
    # The broker's one-port listener tells HTTP from MQTT by ALPN.
    context.set_alpn_protocols(["http/1.1"])
    return context


class _WayFailed(SyncFailed):
    """The way to the server failed (the proxy, or TCP to the server), not
    the server; ``fault`` says how (``epns.routes.PathFault``)."""

    def __init__(self, detail: str, fault: PathFault) -> None:
        super().__init__(detail)
        self.fault = fault


class _Busy(SyncFailed):
    """A busy answer (429/503) that ends the exchange; ``retry_after`` is the
    wait it asked for, if it said."""

    def __init__(self, detail: str, status: int, retry_after: float | None) -> None:
        super().__init__(detail, status)
        self.retry_after = retry_after


class _Exchange:
    """The two steps of one exchange, with the retries of busy answers, on
    one connection while the server keeps it open."""

    def __init__(self, job: ExchangeJob, origin: _Origin, context: ssl.SSLContext | None,
                 sleep: Callable[[float], Awaitable[None]], rng: random.Random) -> None:
        self._job = job
        self._origin = origin
        self._context = context
        self._sleep = sleep
        self._rng = rng
        self._posted = False
        self._connection: _Connection | None = None

    async def steps(self) -> ExchangeResult:
        """POST, then GET when ``fetch`` is on; failures become the result."""
        try:
            answer = await self._send("POST", self._job.body)
            self._posted = True
            if self._job.fetch:
                answer = await self._send("GET")
        except _Busy as exc:
            return ExchangeResult(self._posted, error=str(exc), http_status=exc.status,
                                  retry_after=exc.retry_after)
        except _WayFailed as exc:
            return ExchangeResult(self._posted, error=str(exc), fault=exc.fault)
        except SyncFailed as exc:
            return ExchangeResult(self._posted, error=str(exc), http_status=exc.status)
        if not self._job.fetch and not self._job.answered:
            return ExchangeResult(True, answer.status)
        return ExchangeResult(True, answer.status, answer.body, answer.content_type)

    def drop(self) -> None:
        """Close the connection at once, if one is open."""
        if self._connection is not None:
            self._connection.abort()
            self._connection = None

    async def _send(self, method: str, content: bytes | None = None) -> _Answer:
        answer = await self._attempt(method, content)
        retries = 0
        while answer.status in RETRYABLE and retries < self._job.max_retries:
            await self._wait_to_retry(answer, method, retries)
            retries += 1
            answer = await self._attempt(method, content)
        if 200 <= answer.status < 300:
            return answer
        detail = http_failure(answer.status, self._job.url, retries) + _says(answer)
        if answer.status in RETRYABLE:
            raise _Busy(detail, answer.status, retry_after_seconds(answer.retry_after, time.time()))
        raise SyncFailed(detail, answer.status)

    async def _attempt(self, method: str, content: bytes | None) -> _Answer:
        connection = await self._connected()
        job = self._job
        request = h11.Request(method=method, target=self._origin.target,
                              headers=_headers(self._origin.authority, SyncFormat(job.format),
                                               job.token, content))
        try:
            answer = await connection.request(request, content, job.timeout,
                                              whole=method == "GET" or job.answered)
        except SyncFailed:
            self.drop()
            raise
        if not connection.reusable():
            self.drop()
        return answer

    async def _connected(self) -> _Connection:
        """The open connection, or a new one on the job's way."""
        if self._connection is not None and self._connection.reusable():
            return self._connection
        self.drop()
        job, origin = self._job, self._origin
        proxy = None if job.proxy_url is None else parse_proxy(job.proxy_url)
        try:
            reader, writer = await open_stream(origin.host, origin.port, proxy=proxy,
                                               context=self._context, timeouts=job.timeouts,
                                               peer="server")
        except RouteError as exc:
            fault = fault_of(exc)
            if fault is not None:
                raise _WayFailed(str(exc), fault) from exc
            raise SyncFailed(str(exc)) from exc
        self._connection = _Connection(reader, writer, job.server)
        return self._connection

    async def _wait_to_retry(self, answer: _Answer, method: str, retries: int) -> None:
        limit = self._job.max_retry_after
        asked = retry_after_seconds(answer.retry_after, time.time())
        if asked is not None and asked > limit:
            # Coming back sooner than asked would only be refused again; the
            # agent's retry of the whole sync waits that long.
            raise _Busy(f"server answered {answer.status}: busy, and asks to retry after "
                        f"{asked:.0f} s, more than sync.max_retry_after ({limit:g} s)"
                        + _says(answer), answer.status, asked)
        delay = retry_delay(asked, retries, limit, self._rng)
        event(log, "sync_retry", logging.WARNING, method=method, status=answer.status,
              retry_after=answer.retry_after, wait=round(delay, 2), retry=retries + 1)
        await self._sleep(delay)


class _Connection:
    """One HTTP/1.1 connection: h11's state machine, fed from the streams.
    Every failure is raised as a ``SyncFailed`` in ``describe_error``'s words."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 server: str) -> None:
        self._reader = reader
        self._writer = writer
        self._server = server
        self._h11 = h11.Connection(h11.CLIENT)
        # Whether the server closed its side; the head of a body read for its reason.
        self._closed = False
        self._head = b""

    def reusable(self) -> bool:
        """Whether the next request may go on this connection: the last
        exchange completed, keep-alive, and the server has not closed it
        meanwhile (it may, while the agent waits to retry)."""
        return self._h11.our_state is h11.IDLE and not self._reader.at_eof()

    def abort(self) -> None:
        """Close at once, without waiting to flush or for the server."""
        self._writer.transport.abort()

    async def request(self, request: h11.Request, content: bytes | None, timeout: float, *,
                      whole: bool) -> _Answer:
        """Send ``request``; the answer. A successful answer's body is read
        ``whole`` (at most MAX_BYTES), any other only for its reason."""
        step = "sending the report" if content else "sending the request"
        try:
            await self._send(request, content, timeout)
            step = "waiting for the answer"
            return await self._answer(timeout, whole)
        except TimeoutError:
            raise SyncFailed(f"no answer from {self._server} within {timeout:g} s "
                             f"(timed out {step})") from None
        except (OSError, h11.RemoteProtocolError) as exc:
            raise SyncFailed(describe_error(exc, server=self._server,
                                            closed=self._closed)) from exc

    async def _send(self, request: h11.Request, content: bytes | None, timeout: float) -> None:
        data = self._h11.send(request) or b""
        if content:
            data += self._h11.send(h11.Data(data=content)) or b""
        data += self._h11.send(h11.EndOfMessage()) or b""
        self._writer.write(data)
        async with asyncio.timeout(timeout):
            await self._writer.drain()

    async def _answer(self, timeout: float, whole: bool) -> _Answer:
        response = await self._next_event(timeout)
        while isinstance(response, h11.InformationalResponse):  # 100 Continue
            response = await self._next_event(timeout)
        assert isinstance(response, h11.Response)  # h11 yields nothing else here
        status = response.status_code
        body = await self._read_body(timeout, MAX_BYTES if whole and 200 <= status < 300
                                     else MAX_ERROR_BYTES)
        if body is None:
            if whole and 200 <= status < 300:
                raise SyncFailed(f"the server's reply is larger than {MAX_BYTES} bytes", status)
            # Read only for the reason: its head is enough (the connection
            # is not reused, the rest of the body still being on its way).
            body = self._head
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in response.headers}
        return _Answer(status, headers.get("retry-after"), headers.get("content-type"), body)

    async def _read_body(self, timeout: float, limit: int) -> bytes | None:
        """The body, or None when it is longer than ``limit`` (its first
        ``limit`` bytes are then in ``_head``)."""
        body = bytearray()
        while not isinstance(event := await self._next_event(timeout), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                body += event.data
            if len(body) > limit:
                self._head = bytes(body[:limit])
                return None
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()  # keep-alive: the next request may follow
        return bytes(body)

    async def _next_event(self, timeout: float) -> object:
        """h11's next event (the caller checks which), reading as it needs."""
        while (got := self._h11.next_event()) is h11.NEED_DATA:
            async with asyncio.timeout(timeout):
                data = await self._reader.read(READ_SIZE)
            # b"" is the end of the stream: h11 then says whether that was
            # allowed here (it is not before the answer has ended).
            self._closed = not data
            self._h11.receive_data(data)
        return got


def retry_delay(asked: float | None, retries: int, limit: float, rng: random.Random) -> float:
    """Seconds to wait before retrying a busy answer: what the server ``asked``
    plus jitter, or else exponential backoff with full jitter; at most ``limit``."""
    if asked is None:
        # The exponent is capped so that many retries cannot overflow a float.
        return rng.uniform(0, min(limit, BACKOFF_BASE * 2 ** min(retries, 30)))
    return min(limit, asked + rng.uniform(0, max(MIN_RETRY_JITTER, asked * RETRY_JITTER)))


_STATUS_WORDS = {
    400: "the server did not understand the report (is sync.format what it expects?)",
    401: "the agent's identity was not accepted",
    403: "this agent may not sync with this server",
    413: "the report is too large for the server",
    429: "too many requests",
    503: "service unavailable",
}


def _says(answer: _Answer) -> str:
    reason = server_reason(answer.body)
    return "" if reason is None else f"; the server says: {reason}"


def server_reason(body: bytes) -> str | None:
    """The server's own words in an error answer (``{"error": {"code",
    "message"}}``, the one error shape of the epns server), as ``code:
    message``; None when the body is not that shape (a proxy's error page)."""
    try:
        error = json.loads(body).get("error")
        code, message = error.get("code"), error.get("message")
    except (ValueError, AttributeError):
        return None
    if not isinstance(code, str) or not isinstance(message, str):
        return None
    return f"{code}: {message}"[:MAX_REASON]


def http_failure(status: int, url: str, retries: int) -> str:
    """Plain words for an HTTP status that ends a sync."""
    if status == 404:
        words = f"no sync endpoint at {url} (check sync.url)"
    elif 300 <= status < 400:
        words = "a redirect, which the agent does not follow (check sync.url)"
    else:
        words = _STATUS_WORDS.get(status) or ("server error" if status >= 500 else "refused")
    if retries:
        words += f", still after {retries} retries"
    return f"server answered {status}: {words}"


def describe_error(exc: OSError | h11.RemoteProtocolError, *, server: str,
                   closed: bool = False) -> str:
    """Plain words for a failure of an open connection to ``server``: TLS
    (a TLS 1.3 server refuses a client certificate after the handshake), a
    connection ``closed`` or reset before the answer ended, or an answer
    that is not HTTP/1.1."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {_tls_words(exc)} ({server})"
    if isinstance(exc, h11.RemoteProtocolError):
        if closed:
            return f"{server} closed the connection without answering"
        return f"{server} did not answer in HTTP/1.1: {exc}"
    reason = exc.strerror.lower() if exc.strerror else str(exc)
    return f"{server} closed the connection without answering" + (
        f" ({reason})" if reason else "")


def _tls_words(exc: ssl.SSLError) -> str:
    # "[SSL: CODE] words (_ssl.c:1234)" -> "words"
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    return re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", text)


def _headers(authority: str, fmt: SyncFormat, token: str | None,
             content: bytes | None) -> list[tuple[str, str]]:
    headers = [("Host", authority), ("Content-Type", fmt.content_type),
               ("Accept", fmt.content_type), ("User-Agent", f"epns-agent/{__version__}")]
    if content is not None:
        headers.append(("Content-Length", str(len(content))))
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    return headers
