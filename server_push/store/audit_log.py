"""Reading the audit log: one page of entries by actor, action, target and
time, their count, and the same entries as CSV for an export.

Entries are written by ``history.audit``; filters on actor and action over
time use ``ix_audit_actor_at`` and ``ix_audit_action_at`` (migration 0007),
a time range alone ``ix_audit_at``. Targets are a JSON list (``json_lists``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select

from server_push.store.json_lists import holds
from server_push.store.models import AuditEntry

CSV_COLUMNS = ("at", "actor", "action", "targets", "outcome", "ref")


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Entries wanted; a tuple holds values any of which matches. ``since``
    is inclusive, ``until`` exclusive (UNIX seconds)."""

    actors: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None

    def conditions(self, dialect: str) -> list[ColumnElement[bool]]:
        """The WHERE clauses."""
        where: list[ColumnElement[bool]] = []
        if self.actors:
            where.append(AuditEntry.actor.in_(self.actors))
        if self.actions:
            where.append(AuditEntry.action.in_(self.actions))
        if self.targets:
            where.append(or_(*(holds(AuditEntry.targets, name, dialect)
                               for name in self.targets)))
        if self.since is not None:
            where.append(AuditEntry.at >= self.since)
        if self.until is not None:
            where.append(AuditEntry.at < self.until)
        return where


def page_query(wanted: AuditFilter, dialect: str, *, newest_first: bool, limit: int | None,
               offset: int) -> Select[Any]:
    """One page of entries by time (ties by their order of writing)."""
    order = ((AuditEntry.at.desc(), AuditEntry.id.desc()) if newest_first
             else (AuditEntry.at.asc(), AuditEntry.id.asc()))
    return (select(AuditEntry).where(*wanted.conditions(dialect)).order_by(*order)
            .offset(offset).limit(limit))


def count_query(wanted: AuditFilter, dialect: str) -> Select[Any]:
    """The number of entries ``wanted`` names."""
    return select(func.count()).select_from(AuditEntry).where(*wanted.conditions(dialect))


def actions_query() -> Select[Any]:
    """Every action the log holds, by name: a short list (the index on
    action and time answers it without reading the entries)."""
    return select(AuditEntry.action).distinct().order_by(AuditEntry.action)


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    """One entry as the API shows it."""
    return {"at": entry.at, "actor": entry.actor, "action": entry.action,
            "targets": entry.targets, "outcome": entry.outcome, "ref": entry.ref}


def as_csv(entries: Iterable[dict[str, Any]]) -> str:
    """Entries as CSV with a header line; targets as a JSON list in one cell,
    times as UNIX seconds (what the API says, so a spreadsheet and a script
    read the same value)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow([repr(entry["at"]), _cell(entry["actor"]), _cell(entry["action"]),
                         json.dumps(entry["targets"]), _cell(entry["outcome"]),
                         _cell(entry["ref"] or "")])
    return out.getvalue()


# What a spreadsheet reads as the start of a formula (OWASP's list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """``text``, with a quote in front where a spreadsheet opening the export
    would run it as a formula: outcomes quote names an installer or an agent
    chose (a host name, a reason)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
