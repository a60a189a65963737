"""The HTTP exchange of one sync, run in a short-lived child process.

    python -m agent_push.http_exchange  < job (JSON)  > result (JSON)

The agent runs for months; httpx, httpcore, anyio and h11 would stay in its
memory after the first sync (about 4 MiB, beyond its idle target). So the agent
keeps everything stateful (the report, task results, hints) and hands this
child one job: the encoded report, where to send it, the TLS material and the
retry settings. The child POSTs it, retrying busy answers (429/503) after
Retry-After or with backoff, GETs the server's reply when ``fetch`` is on,
writes one ``ExchangeResult`` to stdout and exits. Its log lines (``sync_retry``)
go to the stderr it shares with the agent, in the agent's log format.

``ExchangeJob`` and ``ExchangeResult`` are imported by the agent too: httpx is
imported only inside ``exchange``, which the agent never calls.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import re
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from epns import __version__, logs, tls
from epns.errors import ConfigError, SyncFailed
from epns.logs import event
from epns.routes import PathFault
from epns.sync_contract import MAX_BYTES, SyncFormat, retry_after_seconds

if TYPE_CHECKING:
    import httpx

# The agent's logger name, so that the child's lines read as the agent's own.
log = logging.getLogger("agent.sync")

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


@dataclass(frozen=True, slots=True)
class ExchangeJob:
    """Everything the child needs for one exchange; paths are the agent's own
    (relative ones resolve in the working directory the child inherits)."""

    url: str
    server: str
    format: str
    body: bytes
    fetch: bool
    ca: str | None
    cert: str | None
    key: str | None
    token: str | None
    proxy_url: str | None
    timeout: float
    max_retries: int
    max_retry_after: float
    log_level: str
    log_format: str

    def encode(self) -> bytes:
        """The job as the child reads it on stdin."""
        return _encode(asdict(self), "body")

    @classmethod
    def decode(cls, data: bytes) -> ExchangeJob:
        """The job the agent wrote; a malformed one is a bug, and raises."""
        return cls(**_decode(data, "body"))


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
    # What the failure says about the way to the server (a PathFault value):
    # the agent then tries the sync's other way, and tells its MQTT side.
    fault: str | None = None

    def encode(self) -> bytes:
        """The result as the child writes it on stdout."""
        return _encode(asdict(self), "reply")

    @classmethod
    def decode(cls, data: bytes) -> ExchangeResult:
        """The child's result; ValueError (or TypeError) when it is not one."""
        return cls(**_decode(data, "reply"))


def _encode(fields: dict[str, Any], binary: str) -> bytes:
    raw = fields[binary]
    fields[binary] = None if raw is None else base64.b64encode(raw).decode("ascii")
    return json.dumps(fields).encode()


def _decode(data: bytes, binary: str) -> dict[str, Any]:
    fields = json.loads(data)
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    raw = fields.get(binary)
    fields[binary] = None if raw is None else base64.b64decode(raw, validate=True)
    return fields


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    retry_after: str | None
    content_type: str | None
    body: bytes


async def exchange(job: ExchangeJob, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                   rng: random.Random | None = None) -> ExchangeResult:
    """POST the job's report, then GET the reply when ``fetch`` is on; a
    failure is a result whose ``error`` says why, never an exception."""
    _skip_httpx_cli()
    import httpx  # noqa: PLC0415 (after _skip_httpx_cli, which must come first)

    run = _Exchange(job, sleep, rng or random.Random())  # noqa: S311 (jitter, not a secret)
    try:
        context = tls.client_context(_path(job.ca), _path(job.cert), _path(job.key))
    except ConfigError as exc:
        return ExchangeResult(posted=False, error=str(exc))
    async with httpx.AsyncClient(verify=context, proxy=job.proxy_url, timeout=job.timeout,
                                 headers=_headers(SyncFormat(job.format), job.token),
                                 # Proxy variables were read once, by the agent.
                                 trust_env=False) as client:
        return await run.steps(client)


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
    """The two steps of one exchange, with the retries of busy answers."""

    def __init__(self, job: ExchangeJob, sleep: Callable[[float], Awaitable[None]],
                 rng: random.Random) -> None:
        self._job = job
        self._sleep = sleep
        self._rng = rng
        self._posted = False

    async def steps(self, client: httpx.AsyncClient) -> ExchangeResult:
        """POST, then GET when ``fetch`` is on; failures become the result."""
        try:
            answer = await self._send(client, "POST", self._job.body)
            self._posted = True
            if self._job.fetch:
                answer = await self._send(client, "GET")
        except _Busy as exc:
            return ExchangeResult(self._posted, error=str(exc), http_status=exc.status,
                                  retry_after=exc.retry_after)
        except _WayFailed as exc:
            return ExchangeResult(self._posted, error=str(exc), fault=exc.fault.value)
        except SyncFailed as exc:
            return ExchangeResult(self._posted, error=str(exc), http_status=exc.status)
        if not self._job.fetch:
            return ExchangeResult(True, answer.status)
        return ExchangeResult(True, answer.status, answer.body, answer.content_type)

    async def _send(self, client: httpx.AsyncClient, method: str,
                    content: bytes | None = None) -> _Answer:
        answer = await self._attempt(client, method, content)
        retries = 0
        while answer.status in RETRYABLE and retries < self._job.max_retries:
            await self._wait_to_retry(answer, method, retries)
            retries += 1
            answer = await self._attempt(client, method, content)
        if 200 <= answer.status < 300:
            return answer
        detail = http_failure(answer.status, self._job.url, retries) + _says(answer)
        if answer.status in RETRYABLE:
            raise _Busy(detail, answer.status, retry_after_seconds(answer.retry_after, time.time()))
        raise SyncFailed(detail, answer.status)

    async def _attempt(self, client: httpx.AsyncClient, method: str,
                       content: bytes | None) -> _Answer:
        import httpx  # noqa: PLC0415 (imported by exchange; see there)

        job = self._job
        try:
            async with client.stream(method, job.url, content=content) as response:
                body = b""
                if method == "GET" and response.is_success:
                    body = await _read_limited(response, MAX_BYTES)
                elif not response.is_success:
                    body = await _read_head(response, MAX_ERROR_BYTES)
        # anyio lets some TLS and socket errors through without wrapping them.
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            detail = describe_error(exc, server=job.server, proxy_url=job.proxy_url,
                                    timeout=job.timeout)
            fault = path_fault(exc, proxied=job.proxy_url is not None)
            if fault is not None:
                raise _WayFailed(detail, fault) from exc
            raise SyncFailed(detail) from exc
        headers = response.headers
        return _Answer(response.status_code, headers.get("retry-after"),
                       headers.get("content-type"), body)

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


def path_fault(exc: Exception, *, proxied: bool) -> PathFault | None:
    """What an exception of the exchange says about the way to the server:
    the proxy's answer to CONNECT, a proxy that cannot be reached, or a
    server address that does not answer; None when the server itself (or
    TLS with it) failed, which another way would not change."""
    import httpx  # noqa: PLC0415 (imported by exchange; see there)

    if isinstance(exc, httpx.ProxyError):
        # httpcore words a refused CONNECT as "<status> <reason>".
        status = re.match(r"\s*(\d{3})\b", str(exc))
        code = int(status.group(1)) if status else 0
        if code in (401, 407):
            return PathFault.PROXY_CREDENTIALS
        if code == 403:
            return PathFault.PROXY_PORT
        return PathFault.PROXY_DEAD
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        if any(isinstance(e, ssl.SSLError) for e in _causes(exc)):
            return None  # TLS with the server failed: another way would meet the same
        # Through a proxy, the connection that failed is the one to the proxy.
        return PathFault.PROXY_DEAD if proxied else PathFault.UNREACHABLE
    return None


def describe_error(exc: Exception, *, server: str, proxy_url: str | None,
                   timeout: float) -> str:
    """Plain words for an exception raised while syncing with ``server``."""
    import httpx  # noqa: PLC0415 (imported by exchange; see there)

    if isinstance(exc, httpx.TimeoutException):
        step = {httpx.ConnectTimeout: "connecting", httpx.WriteTimeout: "sending the report"}
        return (f"no answer from {server} within {timeout:g} s "
                f"(timed out {step.get(type(exc), 'waiting for the answer')})")
    if isinstance(exc, httpx.ProxyError):
        return f"proxy {_host_port(proxy_url)}: {exc}"
    causes = list(_causes(exc))
    tls_error = next((e for e in causes if isinstance(e, ssl.SSLError)
                      and not isinstance(e, ssl.SSLWantReadError | ssl.SSLWantWriteError)), None)
    if tls_error is not None:
        return f"TLS: {_tls_words(tls_error)} ({server})"
    errno = next((e.errno for e in causes if isinstance(e, OSError) and e.errno), None)
    reason = os.strerror(errno).lower() if errno is not None else ""
    if isinstance(exc, httpx.ConnectError):
        # Through a proxy, the connection that failed is the one to the proxy.
        peer = server if proxy_url is None else f"proxy {_host_port(proxy_url)}"
        return f"cannot connect to {peer}: {reason or exc}"
    if isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError):
        return f"{server} closed the connection without answering" + (
            f" ({reason})" if reason else "")
    return f"sync with {server} failed: {type(exc).__name__}: {exc}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from, into exception groups too: anyio
    reports a refused connection as a group of one error per address tried."""
    pending = [exc]
    while pending:
        current = pending.pop(0)
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        cause = current.__cause__ or current.__context__
        if cause is not None:
            pending.append(cause)


def _tls_words(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    # "[SSL: CODE] words (_ssl.c:1234)" -> "words"
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    return re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", text)


def _host_port(url: str | None) -> str:
    """Where a proxy is, without the credentials its URL may carry."""
    parts = urlsplit(url or "")
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _skip_httpx_cli() -> None:
    """httpx's ``__init__`` imports its command line, and with it click, rich and
    pygments, whenever those happen to be installed; the exchange never runs
    it, and they would double httpx's import time (0.05 s to 0.09 s here), which
    every sync pays. A None in ``sys.modules`` makes that import fail, and
    httpx falls back to a stub ``main``."""
    if "httpx" not in sys.modules:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _headers(fmt: SyncFormat, token: str | None) -> dict[str, str]:
    headers = {"Content-Type": fmt.content_type, "Accept": fmt.content_type,
               "User-Agent": f"epns-agent/{__version__}"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def _read_head(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of the body: an error page is read for its
    reason, never buffered whole."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return bytes(body[:limit])


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise SyncFailed(f"the server's reply is larger than {limit} bytes",
                             response.status_code)
    return bytes(body)


def main() -> None:
    """Read one job on stdin, run it, write its result on stdout."""
    job = ExchangeJob.decode(sys.stdin.buffer.read())
    logs.configure(job.log_level, job.log_format)
    result = asyncio.run(exchange(job))
    sys.stdout.buffer.write(result.encode())


if __name__ == "__main__":
    main()
