"""Finding agents in a fleet of thousands: the filters, sort order and page of
``GET /api/v1/agents`` as one SQL query, and the totals by presence.

Everything is done by the database, so a page of 10,000 rows costs a page,
not the fleet: filters on presence, route, version, last seen and identity
expiry use the agents' indexes (migration 0007). The shown presence is not a
column: ``online`` turns ``stale`` when the agent has not been heard from
within ``presence.stale_after`` or when the server has lost the broker
(``registry.presence_of``), so it is a SQL expression of the stored presence,
the last time heard and that cut-off, computed for ``now``.

Groups are a JSON list per agent (``store.json_lists``). Text sorts in byte
order on both databases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, false, func, or_, select

from epns.errors import RequestError
from server_push.store.json_lists import as_text, holds
from server_push.store.models import Agent

PRESENCES = ("online", "stale", "offline", "unknown")
# The order of ``sort=presence``: the reachable first.
_PRESENCE_RANK = {name: rank for rank, name in enumerate(PRESENCES)}
SORT_FIELDS = ("id", "last_seen", "presence", "route", "version", "group",
               "identity_expires_at")

_TEXT_FIELDS = frozenset({"id", "route", "version", "group"})


class InvalidQuery(RequestError):
    """A sort field or filter the API does not know: refused, never ignored."""

    status = 422
    code = "invalid_query"


@dataclass(frozen=True, slots=True)
class SortKey:
    """One sort field and its direction."""

    field: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class AgentFilter:
    """What the caller wants to see; a tuple holds values any of which matches."""

    q: str | None = None
    presence: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    last_seen_before: float | None = None
    last_seen_after: float | None = None
    expiring_within: float | None = None
    # exclude: agents in service; include: retired ones too; only: retired ones.
    retired: str = "exclude"


@dataclass(frozen=True, slots=True)
class Liveness:
    """What the shown presence depends on besides the row."""

    now: float
    stale_after: float
    link_up: bool


def parse_sort(text: str, fields: Sequence[str] = SORT_FIELDS) -> tuple[SortKey, ...]:
    """``"-last_seen,id"`` as sort keys; InvalidQuery (422) naming the field
    for an unknown or repeated one."""
    keys: list[SortKey] = []
    for part in text.split(","):
        name = part.strip()
        descending = name.startswith("-")
        name = name.removeprefix("-")
        if name not in fields:
            raise InvalidQuery(f"cannot sort by {part.strip()!r}: sort by one or more of "
                               f"{', '.join(fields)}, comma-separated, '-' before a field "
                               "for descending")
        if any(key.field == name for key in keys):
            raise InvalidQuery(f"sort names {name!r} twice")
        keys.append(SortKey(name, descending))
    return tuple(keys)


def _heard() -> ColumnElement[float]:
    return func.coalesce(Agent.last_seen, Agent.presence_at, 0.0)


def _is(presence: str, live: Liveness) -> ColumnElement[bool]:
    """The rows whose shown presence is ``presence``."""
    said_online = Agent.presence == "online"
    if presence in ("offline", "unknown"):
        return Agent.presence == presence
    if not live.link_up:
        return said_online if presence == "stale" else false()
    fresh = _heard() >= live.now - live.stale_after
    return and_(said_online, fresh if presence == "online" else ~fresh)


def _presence_rank(live: Liveness) -> ColumnElement[int]:
    return case(*((_is(name, live), rank) for name, rank in _PRESENCE_RANK.items()),
                else_=len(PRESENCES))


def conditions(wanted: AgentFilter, live: Liveness, dialect: str) -> list[ColumnElement[bool]]:
    """The WHERE clauses of ``wanted``."""
    where: list[ColumnElement[bool]] = []
    if wanted.retired == "exclude":
        where.append(Agent.retired_at.is_(None))
    elif wanted.retired == "only":
        where.append(Agent.retired_at.is_not(None))
    if wanted.q:
        needle = wanted.q.lower()
        where.append(or_(func.lower(Agent.id).contains(needle, autoescape=True),
                         func.lower(Agent.hostname).contains(needle, autoescape=True)))
    if wanted.presence:
        where.append(or_(*(_is(name, live) for name in wanted.presence)))
    if wanted.groups:
        where.append(or_(*(holds(Agent.groups, name, dialect) for name in wanted.groups)))
    if wanted.routes:
        where.append(Agent.route.in_(wanted.routes))
    if wanted.versions:
        where.append(Agent.version.in_(wanted.versions))
    if wanted.last_seen_before is not None:
        where.append(Agent.last_seen < wanted.last_seen_before)
    if wanted.last_seen_after is not None:
        where.append(Agent.last_seen >= wanted.last_seen_after)
    if wanted.expiring_within is not None:
        where.append(Agent.identity_expires_at <= live.now + wanted.expiring_within)
    return where


def page_query(wanted: AgentFilter, sort: Sequence[SortKey], live: Liveness, dialect: str,
               *, limit: int | None, offset: int) -> Select[Any]:
    """The rows of one page, in ``sort`` order; missing values (never seen,
    no route) last in either direction, ties broken by id."""
    columns: dict[str, Any] = {
        "id": Agent.id, "last_seen": Agent.last_seen, "presence": _presence_rank(live),
        "route": Agent.route, "version": Agent.version, "group": as_text(Agent.groups),
        "identity_expires_at": Agent.identity_expires_at}
    order = []
    for key in sort:
        column = columns[key.field]
        if dialect == "postgresql" and key.field in _TEXT_FIELDS:
            # Byte order, as SQLite's: a locale's collation ignores dashes and
            # case at first, so the same fleet would sort differently there.
            column = column.collate("C")
        order.append((column.desc() if key.descending else column.asc()).nulls_last())
    if not any(key.field == "id" for key in sort):
        order.append(Agent.id.collate("C").asc() if dialect == "postgresql" else Agent.id.asc())
    query = select(Agent).where(*conditions(wanted, live, dialect)).order_by(*order)
    return query.offset(offset).limit(limit)


def counts_query(wanted: AgentFilter, live: Liveness, dialect: str) -> Select[*tuple[int, ...]]:
    """One row: the number of matching agents, then of each presence in PRESENCES."""
    return select(func.count(), *(func.count(case((_is(name, live), 1))) for name in PRESENCES)
                  ).select_from(Agent).where(*conditions(wanted, live, dialect))
