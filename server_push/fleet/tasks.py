"""Tasks: small jobs an admin queues for an agent, handed out at its next
sync (GET) and answered in the report after (POST). A task is repeated at
every GET until a report carries its result, so a lost reply loses nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns.errors import BadRequest, MalformedMessage, NotFound
from epns.sync_contract import (
    SyncFormat,
    SyncReply,
    TaskResult,
    TaskType,
    apply_set_config,
    encode_reply,
)
from epns.sync_contract import Task as WireTask
from server_push.store.history import remember
from server_push.store.models import Agent, Task

OPEN_STATES = ("pending", "sent")
MAX_OPEN_PER_AGENT = 100


def task_dict(task: Task) -> dict[str, Any]:
    """The API view of a task."""
    return {"id": task.id, "agent_id": task.agent_id, "type": task.type, "body": task.body,
            "state": task.state, "created_at": task.created_at, "created_by": task.created_by,
            "sent_at": task.sent_at, "result_at": task.result_at, "detail": task.detail}


def _check_body(task_type: str, body: dict[str, Any]) -> None:
    """BadRequest for a body the sync reply cannot carry (an infinite number, a
    control character XML refuses, nesting beyond the contract) or, for
    set_config, hints the agent would refuse. Queued, such a task would break
    every sync of its agent: it is handed out until a result closes it."""
    task = WireTask("check", task_type, body)
    try:
        for fmt in SyncFormat:
            encode_reply(SyncReply(tasks=(task,)), fmt)
        if task_type == TaskType.SET_CONFIG:
            apply_set_config(SyncReply(), task)
    except MalformedMessage as exc:
        raise BadRequest(f"task body: {exc}", code="bad_task_body") from exc


class Tasks:
    """Queue, hand out and close tasks."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, agent_id: str, task_type: str, body: dict[str, Any],
                     actor: str) -> dict[str, Any]:
        """Queue a task for the agent's next sync."""
        if task_type not in {t.value for t in TaskType}:
            raise BadRequest(f"unknown task type {task_type!r}; one of "
                             f"{', '.join(t.value for t in TaskType)}", code="unknown_task_type")
        _check_body(task_type, body)
        now = time.time()
        async with self._sessions() as session, session.begin():
            if await session.get(Agent, agent_id) is None:
                raise NotFound(f"no agent {agent_id!r}", code="unknown_agent")
            open_count = len((await session.scalars(select(Task.id).where(
                Task.agent_id == agent_id, Task.state.in_(OPEN_STATES)))).all())
            if open_count >= MAX_OPEN_PER_AGENT:
                raise BadRequest(f"agent {agent_id!r} has {open_count} open tasks already",
                                 code="too_many_tasks")
            task = Task(id=uuid.uuid4().hex, agent_id=agent_id, type=task_type, body=body,
                        created_at=now, created_by=actor, state="pending", detail="")
            session.add(task)
            remember(session, agent_id, now, "task_queued", f"{task_type} by {actor}")
        return task_dict(task)

    async def for_agent(self, agent_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The agent's tasks, newest first."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(Task).where(Task.agent_id == agent_id)
                                          .order_by(Task.created_at.desc()).limit(limit))).all()
        return [task_dict(t) for t in rows]

    async def hand_out(self, agent_id: str, now: float) -> tuple[WireTask, ...]:
        """The agent's open tasks, marked sent. Every sync's GET asks, and
        most find none: one read, and a write only when there is one."""
        async with self._sessions() as session:
            rows = (await session.execute(select(Task.id, Task.type, Task.body).where(
                Task.agent_id == agent_id, Task.state.in_(OPEN_STATES))
                .order_by(Task.created_at))).all()
            if rows:
                await session.execute(
                    update(Task).where(Task.id.in_([row.id for row in rows]),
                                       Task.state.in_(OPEN_STATES))
                    .values(state="sent", sent_at=func.coalesce(Task.sent_at, now)))
                await session.commit()
        return tuple(WireTask(row.id, row.type, dict(row.body)) for row in rows)

    async def close(self, agent_id: str, results: Sequence[TaskResult], now: float) -> None:
        """Record the results a report carries; results for other agents' tasks
        or unknown ids are ignored."""
        if not results:
            return
        async with self._sessions() as session, session.begin():
            for result in results:
                task = await session.get(Task, result.task_id)
                if task is None or task.agent_id != agent_id or task.state not in OPEN_STATES:
                    continue
                # An agent's output may hold a NUL; PostgreSQL text cannot.
                detail = result.detail.replace("\x00", "")
                task.state, task.result_at = result.status.value, now
                task.detail = detail[:2000]
                remember(session, agent_id, now, "task_" + result.status.value,
                         f"{task.type}: {detail[:200]}")
