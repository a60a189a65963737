"""The audit log (who did what to whom, and how it ended) and each agent's history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server_push.store.models import AgentEvent, AuditEntry


def audit(session: AsyncSession, *, at: float, actor: str, action: str, targets: list[Any],
          outcome: str, ref: str | None = None) -> None:
    """Add an audit entry inside the caller's transaction."""
    session.add(AuditEntry(at=at, actor=actor, action=action, targets=targets[:1000],
                           outcome=outcome, ref=ref))


async def settle_audit(session: AsyncSession, *, action: str, ref: str, outcome: str) -> None:
    """Write the final outcome of the audited request ``ref``."""
    await session.execute(update(AuditEntry)
                          .where(AuditEntry.action == action, AuditEntry.ref == ref)
                          .values(outcome=outcome))


def remember(session: AsyncSession, agent_id: str, at: float, kind: str, detail: str = "") -> None:
    """Add a line to an agent's history inside the caller's transaction."""
    session.add(AgentEvent(agent_id=agent_id, at=at, kind=kind, detail=detail[:2000]))


async def remember_lines(session: AsyncSession,
                         lines: Sequence[tuple[str, float, str, str]]) -> None:
    """Lines of agents' histories, each (agent, at, kind, detail), as one
    Core insert inside the caller's transaction: the sync and ack paths run
    once per agent of a wake-all, and an ORM object per line cost them a
    flush of the unit of work each."""
    if lines:
        await session.execute(insert(AgentEvent), [
            {"agent_id": agent_id, "at": at, "kind": kind, "detail": detail[:2000]}
            for agent_id, at, kind, detail in lines])


async def remember_all(session: AsyncSession, agent_ids: Sequence[str], at: float, kind: str,
                       detail: str = "") -> None:
    """The same line in many agents' histories, as one bulk insert (a
    wake-all writes one per agent: ORM objects one by one took seconds)."""
    if agent_ids:
        await session.execute(insert(AgentEvent), [
            {"agent_id": agent_id, "at": at, "kind": kind, "detail": detail[:2000]}
            for agent_id in agent_ids])


async def prune_history(sessions: async_sessionmaker[AsyncSession], keep: int) -> int:
    """Delete all but the newest ``keep`` history lines of every agent that
    has more; returns how many went. One grouped count finds those agents,
    then each is cut at its ``keep``-th newest line (the agent/time index)."""
    async with sessions() as session:
        crowded = (await session.scalars(
            select(AgentEvent.agent_id).group_by(AgentEvent.agent_id)
            .having(func.count() > keep))).all()
    pruned = 0
    for agent_id in crowded:
        async with sessions() as session, session.begin():
            cut = (await session.execute(
                select(AgentEvent.at, AgentEvent.id).where(AgentEvent.agent_id == agent_id)
                .order_by(AgentEvent.at.desc(), AgentEvent.id.desc())
                .offset(keep - 1).limit(1))).one_or_none()
            if cut is None:
                continue
            result = await session.execute(delete(AgentEvent).where(
                AgentEvent.agent_id == agent_id,
                or_(AgentEvent.at < cut.at, and_(AgentEvent.at == cut.at, AgentEvent.id < cut.id))))
            pruned += result.rowcount  # type: ignore[attr-defined]
    return pruned
