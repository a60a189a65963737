"""The agent's sync: what one sync does, and when syncs run.

A sync action is an async callable ``(SyncRequest) -> SyncOutcome``. It never
raises for the network, the server or the product it calls: a failure is an
outcome whose ``detail`` says what went wrong in words a support person reads.

- ``HttpSync``: the exchange of ``epns.sync_contract``: POST the agent's
  changes, then GET the server's (when ``sync.fetch`` is on), in this process
  with the small HTTP/1.1 client of ``agent_push.http_exchange`` (h11).
- ``CommandSync``: runs a program, e.g. an existing product's "replicate now".
- ``EntryPointSync``: calls ``module:function`` in this process.

``SyncCoordinator`` runs one sync at a time and coalesces requests: one that
arrives during a sync causes exactly one more sync afterwards. That follow-up
starts after the request, which is what the server's delivery contract needs:
a wake requested at T is satisfied by a sync that *started* after T. After a
failed sync it retries on the ``RetrySchedule`` (jittered exponential backoff,
at most the sync interval) until one succeeds, carrying the failed syncs'
command ids, so that a wake-up that arrived while the server was down is answered
soon after it is back rather than an interval later.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import random
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from agent_push import platform
from agent_push.http_exchange import ExchangeJob, ExchangeResult, exchange
from epns.agent_config import SyncSettings, TimeoutSettings
from epns.errors import ConfigError, MalformedMessage, SyncFailed
from epns.logs import event
from epns.routes import PathFault, SyncWay
from epns.sync_contract import (
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
    sync_path,
)

log = logging.getLogger(__name__)

# How much of a failed command's output goes into the outcome's detail.
OUTPUT_TAIL = 300


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """One sync as the coordinator starts it; ``started_at`` is wall-clock time."""

    reason: SyncReason
    command_ids: tuple[str, ...]  # the wake-up commands this sync answers
    started_at: float
    sync_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """How a sync ended. ``status`` is the server's last HTTP status, if any;
    ``reply`` is the server's reply (set_config tasks already applied to its
    hints) when the GET step ran; ``retry_after`` is the wait (s) a busy
    server asked for when it ended the sync."""

    ok: bool
    detail: str
    status: int | None = None
    duration: float = 0.0
    reply: SyncReply | None = None
    retry_after: float | None = None


SyncAction = Callable[[SyncRequest], Awaitable[SyncOutcome]]
OnDone = Callable[[SyncRequest, SyncOutcome], Awaitable[None]]


def build_sync_action(
    settings: SyncSettings,
    agent_id: str,
    *,
    tls: TlsFiles,
    changes: Callable[[], Mapping[str, Any]],
    inventory: Callable[[], Mapping[str, Any]] | None = None,
    token: str | None = None,
    ways: SyncWays | None = None,
    timeouts: TimeoutSettings | None = None,
    renew: Callable[[], None] | None = None,
) -> SyncAction:
    """The action ``sync.action`` names; a ConfigError says what is missing.
    ``renew`` starts a renewal of the agent's identity (a ``renew`` task)."""
    if settings.action == "command":
        return CommandSync(settings.command, settings.timeout, agent_id)
    if settings.action == "entry_point":
        assert settings.entry_point is not None  # SyncSettings refuses it otherwise
        return EntryPointSync(settings.entry_point, settings.timeout)
    return HttpSync(settings, agent_id, tls, changes=changes, inventory=inventory,
                    token=token, ways=ways, timeouts=timeouts, renew=renew)


# --- HTTP -------------------------------------------------------------------------


class SyncWays(Protocol):
    """Which ways the sync's HTTPS goes, and what it learns on them: the
    agent's one route decision (``epns.routes.RouteBook``), so that push and
    sync go the same way and a proxy that fails one fails for both. A way is
    a server URL (``sync.url``, then ``sync.backup_urls``) through the proxy
    or direct (``epns.routes.SyncWay``)."""

    def ways(self) -> list[SyncWay]:
        """The ways to try for this sync, in order."""

    def failed(self, way: SyncWay, fault: PathFault, reason: str) -> None:
        """``way`` failed with ``fault``."""

    def worked(self, way: SyncWay) -> None:
        """A sync went through on ``way``."""


class DirectOnly:
    """The ways of an agent without a proxy: each URL direct, in order, and
    nothing to learn."""

    def __init__(self, urls: list[str]) -> None:
        self._ways = [SyncWay(url) for url in urls]

    def ways(self) -> list[SyncWay]:
        """Every URL, direct."""
        return self._ways

    def failed(self, way: SyncWay, fault: PathFault, reason: str) -> None:
        """Nothing to remember: the next URL is tried."""

    def worked(self, way: SyncWay) -> None:
        """Nothing to remember."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """What an HTTP sync's TLS context is built from: the CA the server's
    certificate must chain to and, for a certificate identity, the agent's own."""

    ca: Path | None
    cert: Path | None = None
    key: Path | None = None


class HttpSync:
    """POST the agent's report, then GET the server's reply when ``sync.fetch`` is on.

    The exchange (``agent_push.http_exchange``) runs in this process; its
    connection is dropped at once when the sync is cancelled or overruns
    ``exchange_deadline``. ``tls`` names
    the CA and the client certificate; ``token`` is sent as a bearer token when
    the agent uses a token identity. Task results and a requested inventory are
    kept here until a report that carries them is accepted, so a failed sync
    loses nothing.
    """

    def __init__(
        self,
        settings: SyncSettings,
        agent_id: str,
        tls: TlsFiles,
        *,
        changes: Callable[[], Mapping[str, Any]],
        inventory: Callable[[], Mapping[str, Any]] | None = None,
        token: str | None = None,
        ways: SyncWays | None = None,
        timeouts: TimeoutSettings | None = None,
        renew: Callable[[], None] | None = None,
    ) -> None:
        if settings.url is None:
            raise ConfigError("sync.url is required when sync.action = 'http'")
        self._settings = settings
        self._agent_id = agent_id
        self._format = SyncFormat(settings.format)
        timeouts = timeouts or TimeoutSettings()
        self._job = _job_template(settings, agent_id, tls, token=token, timeouts=timeouts)
        self._ways = ways or DirectOnly(settings.urls)
        self._deadline = exchange_deadline(settings, timeouts)
        self._changes = changes
        self._inventory = inventory
        self._results: dict[str, TaskResult] = {}
        self._inventory_due = False
        self._renew = renew

    def use_token(self, token: str) -> None:
        """Prove the agent with ``token`` from the next exchange on (a renewed
        one); the certificate files are read at each exchange anyway."""
        self._job = replace(self._job, token=token)

    async def __call__(self, request: SyncRequest) -> SyncOutcome:
        """Run one sync; a failure is an outcome, never an exception."""
        began = time.monotonic()
        try:
            result = await self._exchange(request)
            if result.error is not None:
                return SyncOutcome(False, result.error, result.http_status,
                                   time.monotonic() - began, retry_after=result.retry_after)
            reply = self._accept(result) if self._settings.fetch else None
        except SyncFailed as exc:
            return SyncOutcome(False, str(exc), exc.status, time.monotonic() - began)
        detail = ("report accepted" if reply is None
                  else f"report accepted, reply with {len(reply.tasks)} task(s)")
        return SyncOutcome(True, detail, result.status, time.monotonic() - began, reply)

    async def _exchange(self, request: SyncRequest) -> ExchangeResult:
        report = self._report(request)
        try:
            body = encode_report(report, self._format)
        except MalformedMessage as exc:
            raise SyncFailed(f"the agent's data cannot be sent: {exc}") from exc
        result = ExchangeResult(posted=False, error="no way to the server to try")
        for way in self._ways.ways():
            result = await self._bounded(_job_on(self._job, way, self._agent_id, body))
            if result.posted:
                self._delivered(report)
            if result.fault is None or result.posted:
                if result.error is None:
                    self._ways.worked(way)
                return result
            # The way failed, not the server: tell the agent (its MQTT side
            # learns it too), and try the sync's next way.
            self._ways.failed(way, result.fault, result.error or "")
        return result

    async def _bounded(self, job: ExchangeJob) -> ExchangeResult:
        try:
            async with asyncio.timeout(self._deadline):
                return await exchange(job)
        except TimeoutError:
            raise SyncFailed(f"the sync with {job.server} did not finish within "
                             f"{self._deadline:g} s and was stopped") from None

    def _report(self, request: SyncRequest) -> SyncReport:
        source = self._changes
        if self._inventory_due and self._inventory is not None:
            source = self._inventory
        try:
            changes = source()
        except Exception as exc:  # product code: its failure fails this sync, not the agent
            raise SyncFailed(f"collecting the agent's data failed: "
                             f"{type(exc).__name__}: {exc}") from exc
        # SyncReport.wakes (and the report's "wakes" key) keeps its old name for
        # compatibility with the server: it holds these command ids.
        return SyncReport(self._agent_id, request.sync_id, request.started_at, request.reason,
                          request.command_ids, changes, tuple(self._results.values()))

    def _delivered(self, report: SyncReport) -> None:
        for result in report.results:
            self._results.pop(result.task_id, None)
        self._inventory_due = False

    def _accept(self, result: ExchangeResult) -> SyncReply:
        if result.status == 204:
            return self._take_tasks(SyncReply())
        try:
            fmt = self._format if result.content_type is None else format_of(result.content_type)
            reply = decode_reply(result.reply or b"", fmt)
        except MalformedMessage as exc:
            raise SyncFailed(f"the server's reply is unusable: {exc}", result.status) from exc
        return self._take_tasks(reply)

    def _take_tasks(self, reply: SyncReply) -> SyncReply:
        """Answer the reply's tasks; their results go with the next report."""
        for task in reply.tasks:
            # The server repeats a task until a report carries its result.
            if task.id in self._results:
                continue
            reply, result = answer_task(reply, task, inventory=self._inventory is not None,
                                        renew=self._renew)
            self._results[task.id] = result
            if task.type == TaskType.INVENTORY and result.status is TaskStatus.DONE:
                self._inventory_due = True
        return reply


def exchange_deadline(settings: SyncSettings, timeouts: TimeoutSettings) -> float:
    """Seconds an HTTP sync's exchange on one way may take before it is
    stopped: every attempt of each step at its timeouts (connecting as push
    does, then send and answer), and every retry wait of a busy answer at its
    longest."""
    steps = 2 if settings.fetch else 1
    attempts = settings.max_retries + 1
    connect = max(timeouts.tcp_connect, timeouts.proxy_connect) + timeouts.tls_handshake
    return steps * (attempts * (connect + 2 * settings.timeout)
                    + settings.max_retries * settings.max_retry_after)


def _job_on(template: ExchangeJob, way: SyncWay, agent_id: str, body: bytes) -> ExchangeJob:
    """This sync's job on ``way``: its server URL, its proxy, the report."""
    server = way.url.rstrip("/")
    return replace(template, url=server + sync_path(agent_id), server=server, body=body,
                   proxy_url=None if way.proxy is None else way.proxy.url())


def _job_template(settings: SyncSettings, agent_id: str, tls: TlsFiles, *,
                  token: str | None, timeouts: TimeoutSettings) -> ExchangeJob:
    """The job of every sync, but for the report and the way (``_job_on``)."""
    assert settings.url is not None  # HttpSync refuses it otherwise
    server = settings.url.rstrip("/")
    return ExchangeJob(
        url=server + sync_path(agent_id), server=server, format=settings.format, body=b"",
        fetch=settings.fetch, ca=tls.ca, cert=tls.cert, key=tls.key, token=token,
        proxy_url=None, timeout=settings.timeout, timeouts=timeouts,
        max_retries=settings.max_retries, max_retry_after=settings.max_retry_after)


def answer_task(reply: SyncReply, task: Task, *, inventory: bool,
                renew: Callable[[], None] | None = None) -> tuple[SyncReply, TaskResult]:
    """The reply with ``task`` applied, and the agent's answer to it.
    ``inventory`` says whether this agent can send a full inventory;
    ``renew`` starts a renewal of its identity, when it can renew."""
    if task.type == TaskType.RENEW and renew is not None:
        renew()
        return reply, TaskResult(task.id, TaskStatus.DONE,
                                 "renewal started; the agent's identity_expires_at shows it done")
    if task.type == TaskType.SET_CONFIG:
        try:
            return apply_set_config(reply, task), TaskResult(task.id, TaskStatus.DONE)
        except MalformedMessage as exc:
            return reply, TaskResult(task.id, TaskStatus.FAILED, str(exc))
    if task.type == TaskType.INVENTORY and inventory:
        return reply, TaskResult(task.id, TaskStatus.DONE, "inventory sent with this report")
    return reply, TaskResult(task.id, TaskStatus.UNSUPPORTED,
                             f"this agent does not run {task.type!r} tasks")


# --- a program, or a function -----------------------------------------------------


class CommandSync:
    """Runs ``argv`` (no shell) with ``EPNS_AGENT_ID``, ``EPNS_SYNC_REASON``,
    ``EPNS_SYNC_WAKES`` and ``EPNS_SYNC_ID`` set. Exit 0 is a sync; anything
    else, or running past ``timeout``, is a failure (and the program, with
    anything it started, is killed).

    ``EPNS_SYNC_WAKES`` holds the command ids of the wake-ups the sync answers,
    comma-separated; the variable keeps its old name for compatibility, as the
    programs it is given to read it."""

    def __init__(self, argv: Sequence[str], timeout: float, agent_id: str) -> None:
        if not argv:
            raise ConfigError("sync.command is empty")
        self._argv = tuple(argv)
        self._timeout = timeout
        self._agent_id = agent_id

    async def __call__(self, request: SyncRequest) -> SyncOutcome:
        """Run the program once; a failure is an outcome, never an exception.

        The program runs from a worker thread, not as an asyncio subprocess:
        the event loop the agent needs on Windows (platform.run) has no
        subprocesses. A cancelled sync (the agent stopping) kills it."""
        began = time.monotonic()
        try:
            process = subprocess.Popen(
                self._argv, env=self._environment(request), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                # Its own process group, so a timeout kills what it started too.
                **platform.PROCESS_GROUP)
        except OSError as exc:
            return SyncOutcome(False, f"cannot run {self._argv[0]}: {exc.strerror or exc}",
                               duration=time.monotonic() - began)
        try:
            output = await asyncio.to_thread(_communicate, process, self._timeout)
        except asyncio.CancelledError:
            # The worker thread, still in communicate(), collects it once the
            # kill closes its pipe.
            await asyncio.shield(asyncio.to_thread(platform.kill_process_group, process.pid))
            raise
        if output is None:
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
                # Command ids under the old name: a public interface (see the class).
                "EPNS_SYNC_WAKES": ",".join(request.command_ids),
                "EPNS_SYNC_ID": request.sync_id}


def _communicate(process: subprocess.Popen[bytes], timeout: float) -> bytes | None:
    """The program's output once it ended, or None when it ran past
    ``timeout`` and was killed (in a worker thread: it blocks)."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        return None
    return output


def _kill(process: subprocess.Popen[bytes]) -> None:
    # It may have ended between the timeout and the kill: no error then.
    platform.kill_process_group(process.pid)
    # Collect it, and drain the pipe, so that no zombie or open pipe is left.
    process.communicate()


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
_REASON_RANK = (SyncReason.WAKE, SyncReason.CONNECT, SyncReason.MANUAL, SyncReason.RETRY,
                SyncReason.INTERVAL)
# A retry never comes sooner than this after a failed sync, however the jitter falls.
RETRY_FLOOR = 1.0


class RetrySchedule:
    """When to retry after consecutive failed syncs: a uniform draw from
    ``[0, base * 2**n]`` (full jitter; n failures before this one), but at
    least ``floor`` and what a busy server asked for, and at most ``cap()``,
    the current sync interval, when the interval sync would come anyway."""

    def __init__(self, base: float, cap: Callable[[], float], *, floor: float = RETRY_FLOOR,
                 rng: random.Random | None = None) -> None:
        self._base = base
        self._cap = cap
        self._floor = floor
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self.failures = 0

    def next_delay(self, asked: float | None = None) -> float:
        """The wait before the next retry; each call counts one more failure."""
        cap = self._cap()
        # The exponent is capped so that many failures cannot overflow a float.
        bound = min(cap, self._base * 2 ** min(self.failures, 30))
        self.failures += 1
        return min(cap, max(self._rng.uniform(0, bound), self._floor, asked or 0.0))

    def reset(self) -> None:
        """A sync succeeded: the next failure starts again from ``base``."""
        self.failures = 0


@dataclass(frozen=True, slots=True)
class _Wanted:
    """The sync still to run: the merged reason and the command ids of the
    wake-ups it answers."""

    reason: SyncReason
    command_ids: tuple[str, ...] = ()

    def merge(self, reason: SyncReason, command_id: str | None) -> _Wanted:
        command_ids = (self.command_ids if command_id is None
                       else _united(self.command_ids, (command_id,)))
        return _Wanted(min(self.reason, reason, key=_REASON_RANK.index), command_ids)


class SyncCoordinator:
    """Runs one sync at a time and coalesces the requests made meanwhile.

    ``request`` while idle starts a sync at once; during a sync, it marks one
    more sync as needed (the command ids are united), which starts when the
    current one ends. ``on_done(request, outcome)`` is awaited after each sync.
    A failed sync schedules a "retry" sync after ``retry.next_delay``; every
    sync until one succeeds carries the command ids of the failed ones. Any sync
    that starts meanwhile (a wake, a connect) takes the retry's place.
    """

    def __init__(self, action: SyncAction, on_done: OnDone, *, retry: RetrySchedule,
                 clock: Callable[[], float] = time.time) -> None:
        self._action = action
        self._on_done = on_done
        self._retry = retry
        self._clock = clock
        self._wanted: _Wanted | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._retry_timer: asyncio.TimerHandle | None = None
        # The command ids of the failed syncs since the last success.
        self._unanswered: tuple[str, ...] = ()

    def request(self, reason: str, command_id: str | None = None) -> None:
        """Ask for a sync (``reason`` is a SyncReason value; ``command_id`` is
        the wake-up command it answers, if any); call it from the event loop."""
        if self._closed:
            return  # shutting down: a late wake-up is answered by the next start's sync
        why = SyncReason(reason)
        self._wanted = (self._wanted or _Wanted(why)).merge(why, command_id)
        if self._task is None:
            self._idle.clear()
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def idle(self) -> None:
        """Return once no sync is running or wanted."""
        await self._idle.wait()

    async def close(self) -> None:
        """Cancel the running sync and the scheduled retry; forget the wanted one."""
        self._closed = True
        self._wanted = None
        self._cancel_retry()
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
        self._cancel_retry()  # this sync is the retry
        # started_at is taken now, after every request merged into this sync.
        request = SyncRequest(wanted.reason, _united(self._unanswered, wanted.command_ids),
                              self._clock())
        try:
            outcome = await self._action(request)
        except Exception as exc:  # actions report failures; a bug in one must not stop syncing
            outcome = SyncOutcome(False, f"sync action crashed: {type(exc).__name__}: {exc}")
        event(log, "sync_done" if outcome.ok else "sync_failed",
              logging.INFO if outcome.ok else logging.WARNING, id=request.sync_id,
              reason=request.reason.value, command_ids=",".join(request.command_ids) or "-",
              status=outcome.status, duration=round(outcome.duration, 3), detail=outcome.detail)
        self._plan_retry(request, outcome)
        try:
            await self._on_done(request, outcome)
        except Exception as exc:  # the next sync must still run
            event(log, "sync_on_done_failed", logging.ERROR, id=request.sync_id,
                  error=f"{type(exc).__name__}: {exc}")

    def _plan_retry(self, request: SyncRequest, outcome: SyncOutcome) -> None:
        if outcome.ok:
            self._retry.reset()
            self._unanswered = ()
            return
        self._unanswered = request.command_ids
        delay = self._retry.next_delay(outcome.retry_after)
        self._retry_timer = asyncio.get_running_loop().call_later(delay, self.request, "retry")
        event(log, "sync_retry_scheduled", id=request.sync_id, delay=round(delay, 2),
              failures=self._retry.failures,
              command_ids=",".join(request.command_ids) or "-")

    def _cancel_retry(self) -> None:
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None


def _united(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """The command ids of ``groups``, each once, in order of first appearance."""
    return tuple(dict.fromkeys(command_id for group in groups for command_id in group))
