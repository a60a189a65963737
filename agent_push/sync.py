"""The agent's sync: what one sync does, and when syncs run.

A sync action is an async callable ``(SyncRequest) -> SyncOutcome``. It never
raises for the network, the server or the product it calls: a failure is an
outcome whose ``detail`` says what went wrong in words a support person reads.

- ``HttpSync``: the exchange of ``epns.sync_contract``: POST the agent's
  changes, then GET the server's (when ``sync.fetch`` is on).
- ``CommandSync``: runs a program, e.g. an existing product's "replicate now".
- ``EntryPointSync``: calls ``module:function`` in this process.

``SyncCoordinator`` runs one sync at a time and coalesces requests: one that
arrives during a sync causes exactly one more sync afterwards. That follow-up
starts after the request, which is what the server's delivery contract needs:
a wake requested at T is satisfied by a sync that *started* after T.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import random
import re
import signal
import ssl
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from epns import __version__
from epns.agent_config import SyncSettings
from epns.errors import ConfigError, MalformedMessage, SyncFailed
from epns.logs import event
from epns.sync_contract import (
    MAX_BYTES,
    SyncFormat,
    SyncReason,
    SyncReply,
    SyncReport,
    Task,
    TaskResult,
    TaskStatus,
    TaskType,
    apply_set_config,
    decode_reply,
    encode_report,
    format_of,
    retry_after_seconds,
    sync_path,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("agent.sync")

# The answers that mean "busy, come back later".
RETRYABLE = frozenset({429, 503})
# Without Retry-After, wait n is drawn from [0, BACKOFF_BASE * 2**n] (full jitter).
BACKOFF_BASE = 1.0
# On top of a Retry-After, up to this fraction more (at least a second), so the
# agents a busy server told the same time do not all come back at once.
RETRY_JITTER = 0.25
MIN_RETRY_JITTER = 1.0
# How much of a failed command's output goes into the outcome's detail.
OUTPUT_TAIL = 300


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """One sync as the coordinator starts it; ``started_at`` is wall-clock time."""

    reason: SyncReason
    wakes: tuple[str, ...]
    started_at: float
    sync_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """How a sync ended. ``status`` is the server's last HTTP status, if any;
    ``reply`` is the server's reply (set_config tasks already applied to its
    hints) when the GET step ran."""

    ok: bool
    detail: str
    status: int | None = None
    duration: float = 0.0
    reply: SyncReply | None = None


SyncAction = Callable[[SyncRequest], Awaitable[SyncOutcome]]
OnDone = Callable[[SyncRequest, SyncOutcome], Awaitable[None]]


def build_sync_action(
    settings: SyncSettings,
    agent_id: str,
    *,
    context: ssl.SSLContext,
    changes: Callable[[], Mapping[str, Any]],
    inventory: Callable[[], Mapping[str, Any]] | None = None,
    token: str | None = None,
    proxy_url: str | None = None,
) -> SyncAction:
    """The action ``sync.action`` names; a ConfigError says what is missing."""
    if settings.action == "command":
        return CommandSync(settings.command, settings.timeout, agent_id)
    if settings.action == "entry_point":
        assert settings.entry_point is not None  # SyncSettings refuses it otherwise
        return EntryPointSync(settings.entry_point, settings.timeout)
    return HttpSync(settings, agent_id, context, changes=changes, inventory=inventory,
                    token=token, proxy_url=proxy_url)


# --- HTTP -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    retry_after: str | None
    content_type: str | None
    body: bytes


class HttpSync:
    """POST the agent's report, then GET the server's reply when ``sync.fetch`` is on.

    ``context`` verifies the server and carries the agent's client certificate
    when it has one; ``token`` is sent as a bearer token when the agent uses a
    token identity. Task results and a requested inventory are kept until a
    report that carries them is accepted, so a failed sync loses nothing.
    """

    def __init__(
        self,
        settings: SyncSettings,
        agent_id: str,
        context: ssl.SSLContext,
        *,
        changes: Callable[[], Mapping[str, Any]],
        inventory: Callable[[], Mapping[str, Any]] | None = None,
        token: str | None = None,
        proxy_url: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if settings.url is None:
            raise ConfigError("sync.url is required when sync.action = 'http'")
        self._settings = settings
        self._agent_id = agent_id
        self._server = settings.url.rstrip("/")
        self._url = self._server + sync_path(agent_id)
        self._format = SyncFormat(settings.format)
        self._client_options: dict[str, Any] = {
            "verify": context, "proxy": proxy_url, "timeout": settings.timeout,
            "headers": _headers(self._format, token),
            # Proxy variables were read once, at the edge, into proxy_url.
            "trust_env": False,
        }
        self._proxy_url = proxy_url
        self._changes = changes
        self._inventory = inventory
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self._results: dict[str, TaskResult] = {}
        self._inventory_due = False

    async def __call__(self, request: SyncRequest) -> SyncOutcome:
        """Run one sync; a failure is an outcome, never an exception."""
        began = time.monotonic()
        try:
            status, reply = await self._exchange(request)
        except SyncFailed as exc:
            return SyncOutcome(False, str(exc), exc.status, time.monotonic() - began)
        detail = ("report accepted" if reply is None
                  else f"report accepted, reply with {len(reply.tasks)} task(s)")
        return SyncOutcome(True, detail, status, time.monotonic() - began, reply)

    async def _exchange(self, request: SyncRequest) -> tuple[int, SyncReply | None]:
        report = self._report(request)
        try:
            body = encode_report(report, self._format)
        except MalformedMessage as exc:
            raise SyncFailed(f"the agent's data cannot be sent: {exc}") from exc
        _skip_httpx_cli()
        import httpx  # noqa: PLC0415 (only HTTP syncs need it: not in the agent's idle memory)

        async with httpx.AsyncClient(**self._client_options) as client:
            answer = await self._send(client, "POST", body)
            self._delivered(report)
            if not self._settings.fetch:
                return answer.status, None
            answer = await self._send(client, "GET")
        return answer.status, self._accept(answer)

    def _report(self, request: SyncRequest) -> SyncReport:
        source = self._changes
        if self._inventory_due and self._inventory is not None:
            source = self._inventory
        try:
            changes = source()
        except Exception as exc:  # product code: its failure fails this sync, not the agent
            raise SyncFailed(f"collecting the agent's data failed: "
                             f"{type(exc).__name__}: {exc}") from exc
        return SyncReport(self._agent_id, request.sync_id, request.started_at, request.reason,
                          request.wakes, changes, tuple(self._results.values()))

    def _delivered(self, report: SyncReport) -> None:
        for result in report.results:
            self._results.pop(result.task_id, None)
        self._inventory_due = False

    async def _send(self, client: httpx.AsyncClient, method: str,
                    content: bytes | None = None) -> _Answer:
        answer = await self._attempt(client, method, content)
        retries = 0
        while answer.status in RETRYABLE and retries < self._settings.max_retries:
            await self._wait_to_retry(answer, method, retries)
            retries += 1
            answer = await self._attempt(client, method, content)
        if not 200 <= answer.status < 300:
            raise SyncFailed(http_failure(answer.status, self._url, retries), answer.status)
        return answer

    async def _attempt(self, client: httpx.AsyncClient, method: str,
                       content: bytes | None) -> _Answer:
        import httpx  # noqa: PLC0415 (imported by _exchange; see there)

        try:
            async with client.stream(method, self._url, content=content) as response:
                body = b""
                if method == "GET" and response.is_success:
                    body = await _read_limited(response, MAX_BYTES)
        # anyio lets some TLS and socket errors through without wrapping them.
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise SyncFailed(describe_error(exc, server=self._server, proxy_url=self._proxy_url,
                                            timeout=self._settings.timeout)) from exc
        headers = response.headers
        return _Answer(response.status_code, headers.get("retry-after"),
                       headers.get("content-type"), body)

    async def _wait_to_retry(self, answer: _Answer, method: str, retries: int) -> None:
        limit = self._settings.max_retry_after
        asked = retry_after_seconds(answer.retry_after, time.time())
        if asked is not None and asked > limit:
            # Coming back sooner than asked would only be refused again; the
            # next sync (interval or wake) tries later anyway.
            raise SyncFailed(f"server answered {answer.status}: busy, and asks to retry after "
                             f"{asked:.0f} s, more than sync.max_retry_after ({limit:g} s)",
                             answer.status)
        delay = retry_delay(asked, retries, limit, self._rng)
        event(log, "sync_retry", logging.WARNING, method=method, status=answer.status,
              retry_after=answer.retry_after, wait=round(delay, 2), retry=retries + 1)
        await self._sleep(delay)

    def _accept(self, answer: _Answer) -> SyncReply:
        if answer.status == 204:
            return self._take_tasks(SyncReply())
        try:
            fmt = self._format if answer.content_type is None else format_of(answer.content_type)
            reply = decode_reply(answer.body, fmt)
        except MalformedMessage as exc:
            raise SyncFailed(f"the server's reply is unusable: {exc}", answer.status) from exc
        return self._take_tasks(reply)

    def _take_tasks(self, reply: SyncReply) -> SyncReply:
        """Answer the reply's tasks; their results go with the next report."""
        for task in reply.tasks:
            # The server repeats a task until a report carries its result.
            if task.id in self._results:
                continue
            reply, result = answer_task(reply, task, inventory=self._inventory is not None)
            self._results[task.id] = result
            if task.type == TaskType.INVENTORY and result.status is TaskStatus.DONE:
                self._inventory_due = True
        return reply


def answer_task(reply: SyncReply, task: Task, *, inventory: bool) -> tuple[SyncReply, TaskResult]:
    """The reply with ``task`` applied, and the agent's answer to it.
    ``inventory`` says whether this agent can send a full inventory."""
    if task.type == TaskType.SET_CONFIG:
        try:
            return apply_set_config(reply, task), TaskResult(task.id, TaskStatus.DONE)
        except MalformedMessage as exc:
            return reply, TaskResult(task.id, TaskStatus.FAILED, str(exc))
    if task.type == TaskType.INVENTORY and inventory:
        return reply, TaskResult(task.id, TaskStatus.DONE, "inventory sent with this report")
    return reply, TaskResult(task.id, TaskStatus.UNSUPPORTED,
                             f"this agent does not run {task.type!r} tasks")


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


def describe_error(exc: Exception, *, server: str, proxy_url: str | None,
                   timeout: float) -> str:
    """Plain words for an exception raised while syncing with ``server``."""
    import httpx  # noqa: PLC0415 (imported by _exchange; see there)

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
    pygments (about 6 MiB of memory), whenever those happen to be installed; the
    agent never runs it. A None in ``sys.modules`` makes that import fail, and
    httpx falls back to a stub ``main``."""
    if "httpx" not in sys.modules:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]


def _headers(fmt: SyncFormat, token: str | None) -> dict[str, str]:
    headers = {"Content-Type": fmt.content_type, "Accept": fmt.content_type,
               "User-Agent": f"epns-agent/{__version__}"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise SyncFailed(f"the server's reply is larger than {limit} bytes",
                             response.status_code)
    return bytes(body)


# --- a program, or a function -----------------------------------------------------


class CommandSync:
    """Runs ``argv`` (no shell) with ``EPNS_AGENT_ID``, ``EPNS_SYNC_REASON``,
    ``EPNS_SYNC_WAKES`` (comma-separated) and ``EPNS_SYNC_ID`` set. Exit 0 is
    a sync; anything else, or running past ``timeout``, is a failure (and the
    program, with anything it started, is killed)."""

    def __init__(self, argv: Sequence[str], timeout: float, agent_id: str) -> None:
        if not argv:
            raise ConfigError("sync.command is empty")
        self._argv = tuple(argv)
        self._timeout = timeout
        self._agent_id = agent_id

    async def __call__(self, request: SyncRequest) -> SyncOutcome:
        """Run the program once; a failure is an outcome, never an exception."""
        began = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv, env=self._environment(request), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                # Its own process group, so a timeout kills what it started too.
                start_new_session=True)
        except OSError as exc:
            return SyncOutcome(False, f"cannot run {self._argv[0]}: {exc.strerror or exc}",
                               duration=time.monotonic() - began)
        try:
            async with asyncio.timeout(self._timeout):
                output, _ = await process.communicate()
        except TimeoutError:
            await _kill(process)
            return SyncOutcome(False, f"{self._argv[0]} did not finish within "
                               f"{self._timeout:g} s and was killed",
                               duration=time.monotonic() - began)
        code = process.returncode
        if code == 0:
            return SyncOutcome(True, f"{self._argv[0]} exited with 0",
                               duration=time.monotonic() - began)
        return SyncOutcome(False, f"{self._argv[0]} {_exit_words(code)}{_last_line(output)}",
                           duration=time.monotonic() - began)

    def _environment(self, request: SyncRequest) -> dict[str, str]:
        return {**os.environ, "EPNS_AGENT_ID": self._agent_id,
                "EPNS_SYNC_REASON": request.reason.value,
                "EPNS_SYNC_WAKES": ",".join(request.wakes), "EPNS_SYNC_ID": request.sync_id}


async def _kill(process: asyncio.subprocess.Process) -> None:
    # It may have ended between the timeout and the kill.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    # Collect it, and drain the pipe so that its transport closes.
    await process.communicate()


def _exit_words(code: int | None) -> str:
    if code is not None and code < 0:
        return f"was killed by signal {-code}"
    return f"exited with {code}"


def _last_line(output: bytes) -> str:
    lines = output.decode(errors="replace").strip().splitlines()
    return f": {lines[-1][-OUTPUT_TAIL:]}" if lines else ""


class EntryPointSync:
    """Calls ``module:function`` with the SyncRequest; it may be a coroutine
    function, or a plain one (run in a thread, so that it cannot stall the
    agent). Returning is a sync; raising, or running past ``timeout``, is not."""

    def __init__(self, target: str, timeout: float) -> None:
        self._target = target
        self._function = _load_entry_point(target)
        self._timeout = timeout

    async def __call__(self, request: SyncRequest) -> SyncOutcome:
        """Call the function once; a failure is an outcome, never an exception."""
        began = time.monotonic()
        call = asyncio.ensure_future(self._invoke(request))
        done, _ = await asyncio.wait({call}, timeout=self._timeout)
        if not done:
            # A plain function's thread cannot be stopped; it finishes on its own.
            call.cancel()
            return SyncOutcome(False, f"{self._target} did not return within "
                               f"{self._timeout:g} s", duration=time.monotonic() - began)
        error = call.exception()
        if error is not None:
            return SyncOutcome(False, f"{self._target} raised {type(error).__name__}: {error}",
                               duration=time.monotonic() - began)
        return SyncOutcome(True, f"{self._target} returned", duration=time.monotonic() - began)

    async def _invoke(self, request: SyncRequest) -> None:
        if inspect.iscoroutinefunction(self._function):
            await self._function(request)
            return
        result = await asyncio.to_thread(self._function, request)
        if inspect.isawaitable(result):
            await result


def _load_entry_point(target: str) -> Callable[[SyncRequest], Any]:
    module_name, _, name = target.partition(":")
    if not module_name or not name:
        raise ConfigError(f"sync.entry_point {target!r} is not 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # importing runs the product's code; any failure makes it unusable
        raise ConfigError(f"sync.entry_point {target!r}: cannot import {module_name}: "
                          f"{type(exc).__name__}: {exc}") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"sync.entry_point {target!r}: {module_name} has no function {name}")
    return function  # type: ignore[no-any-return]


# --- coordination -----------------------------------------------------------------

# When requests are merged, the merged sync carries the most telling reason.
_REASON_RANK = (SyncReason.WAKE, SyncReason.CONNECT, SyncReason.MANUAL, SyncReason.INTERVAL)


@dataclass(frozen=True, slots=True)
class _Wanted:
    """The sync still to run: the merged reason and the wakes it answers."""

    reason: SyncReason
    wakes: tuple[str, ...] = ()

    def merge(self, reason: SyncReason, wake_id: str | None) -> _Wanted:
        wakes = self.wakes if wake_id is None else tuple(dict.fromkeys((*self.wakes, wake_id)))
        return _Wanted(min(self.reason, reason, key=_REASON_RANK.index), wakes)


class SyncCoordinator:
    """Runs one sync at a time and coalesces the requests made meanwhile.

    ``request`` while idle starts a sync at once; during a sync, it marks one
    more sync as needed (the wake ids are united), which starts when the
    current one ends. ``on_done(request, outcome)`` is awaited after each sync.
    """

    def __init__(self, action: SyncAction, on_done: OnDone, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._action = action
        self._on_done = on_done
        self._clock = clock
        self._wanted: _Wanted | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    def request(self, reason: str, wake_id: str | None = None) -> None:
        """Ask for a sync (``reason`` is a SyncReason value); call it from the event loop."""
        if self._closed:
            return  # shutting down: a late wake-up is answered by the next start's sync
        why = SyncReason(reason)
        self._wanted = (self._wanted or _Wanted(why)).merge(why, wake_id)
        if self._task is None:
            self._idle.clear()
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def idle(self) -> None:
        """Return once no sync is running or wanted."""
        await self._idle.wait()

    async def close(self) -> None:
        """Cancel the running sync and forget the wanted one."""
        self._closed = True
        self._wanted = None
        task = self._task
        if task is not None:
            task.cancel()
            # wait() rather than await: the task's cancellation is expected,
            # while a cancellation of close() itself must still propagate.
            await asyncio.wait({task})

    async def _drain(self) -> None:
        try:
            while self._wanted is not None:
                wanted, self._wanted = self._wanted, None
                await self._run(wanted)
        finally:
            self._task = None
            self._idle.set()

    async def _run(self, wanted: _Wanted) -> None:
        # started_at is taken now, after every request merged into this sync.
        request = SyncRequest(wanted.reason, wanted.wakes, self._clock())
        try:
            outcome = await self._action(request)
        except Exception as exc:  # actions report failures; a bug in one must not stop syncing
            outcome = SyncOutcome(False, f"sync action crashed: {type(exc).__name__}: {exc}")
        event(log, "sync_done" if outcome.ok else "sync_failed",
              logging.INFO if outcome.ok else logging.WARNING, id=request.sync_id,
              reason=request.reason.value, wakes=",".join(request.wakes) or "-",
              status=outcome.status, duration=round(outcome.duration, 3), detail=outcome.detail)
        try:
            await self._on_done(request, outcome)
        except Exception as exc:  # the next sync must still run
            event(log, "sync_on_done_failed", logging.ERROR, id=request.sync_id,
                  error=f"{type(exc).__name__}: {exc}")
