"""The audit log (who did what to whom, and how it ended) and each agent's history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from server_push.models import AgentEvent, AuditEntry


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
