"""The server's tables, as SQLAlchemy models. One schema for SQLite and PostgreSQL;
changes to it are Alembic migrations in ``server_push/store/migrations``.

Times are UNIX seconds (float): the wire contract speaks them, and they compare
the same on both databases.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """The declarative base of every table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Agent(Base):
    """One enrolled agent, with what its presence and syncs last told us."""

    __tablename__ = "agents"
    # The agents' list filters and sorts by these (migration 0007).
    __table_args__ = (
        Index("ix_agents_presence_last_seen", "presence", "last_seen"),
        Index("ix_agents_last_seen", "last_seen"),
        Index("ix_agents_route", "route"),
        Index("ix_agents_version", "version"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    groups: Mapped[list[Any]] = mapped_column(default=list)
    auth: Mapped[str] = mapped_column(String(16))  # certificate | token
    created_at: Mapped[float] = mapped_column(Float)
    cert_serial: Mapped[str | None] = mapped_column(String(64), default=None)
    token_id: Mapped[str | None] = mapped_column(String(64), default=None)
    revoked_at: Mapped[float | None] = mapped_column(Float, default=None)
    revoked_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # Retired (DELETE /api/v1/agents/{id}): revoked, kept with its history,
    # left out of lists and totals unless asked for.
    retired_at: Mapped[float | None] = mapped_column(Float, default=None)
    # The current identity's validity (cert_serial or token_id). NULL: not
    # known yet (issued before migration 0005, or not by this server); it is
    # learnt from the agent's next sync or renewal.
    identity_issued_at: Mapped[float | None] = mapped_column(Float, default=None)
    identity_expires_at: Mapped[float | None] = mapped_column(Float, default=None, index=True)
    # The last renewal over the sync channel, and how many there were.
    renewed_at: Mapped[float | None] = mapped_column(Float, default=None)
    renewals: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Presence: online or offline as last published, and when.
    presence: Mapped[str] = mapped_column(String(16), default="unknown")
    presence_at: Mapped[float | None] = mapped_column(Float, default=None)
    last_seen: Mapped[float | None] = mapped_column(Float, default=None)
    route: Mapped[str | None] = mapped_column(String(64), default=None)
    version: Mapped[str | None] = mapped_column(String(64), default=None)
    hostname: Mapped[str | None] = mapped_column(String(255), default=None)
    interfaces: Mapped[list[Any]] = mapped_column(default=list)
    # The last sync the server heard of (sync endpoint or sync event).
    last_sync_at: Mapped[float | None] = mapped_column(Float, default=None)
    last_sync_result: Mapped[str | None] = mapped_column(Text, default=None)
    last_sync_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    inventory: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The SHA-256 fingerprint of the machine that enrolled (epns.machine);
    # None for an agent an admin created.
    machine: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    # Keep-awake (epns.keep_awake, migration 0013): whether its presence
    # allows it (None: it did not say), and the record of keep-awake
    # (fleet/keep_awake.py): subnets kept, last instruction, last report.
    keep_awake_allowed: Mapped[bool | None] = mapped_column(Boolean, default=None)
    keep_awake: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class AgentEvent(Base):
    """An agent's history: presence changes, wake-ups, syncs, WoL."""

    __tablename__ = "agent_events"
    __table_args__ = (Index("ix_agent_events_agent_at", "agent_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")


class Wakeup(Base):
    """One accepted wake-up request: who asked, for whom, until when."""

    __tablename__ = "wakeups"
    __table_args__ = (UniqueConstraint("requested_by", "idempotency_key"),
                      Index("ix_wakeups_created_at", "created_at"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    requested_by: Mapped[str] = mapped_column(String(128))
    target_kind: Mapped[str] = mapped_column(String(16))  # agents | group | all
    target: Mapped[list[Any]] = mapped_column(default=list)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), default=None)
    # The fan-out command of a group or "all" wake-up, published once.
    command_id: Mapped[str | None] = mapped_column(String(32), default=None)
    # Set when an admin cancelled it (POST .../cancel, migration 0010).
    cancelled_at: Mapped[float | None] = mapped_column(Float, default=None)
    cancelled_by: Mapped[str | None] = mapped_column(String(128), default=None)


class WakeTarget(Base):
    """The delivery record of one wake-up for one agent.

    requested -> delivered (acked) -> satisfied (a sync that started after the
    request completed), or expired when the TTL ran out first, or cancelled
    by an admin before either (``epns.wakeup``).
    """

    __tablename__ = "wake_targets"
    __table_args__ = (
        Index("ix_wake_targets_agent_state", "agent_id", "state"),
        Index("ix_wake_targets_state_expires", "state", "expires_at"),
        Index("ix_wake_targets_command", "command_id"),
        Index("ix_wake_targets_wakeup_state", "wakeup_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    wakeup_id: Mapped[str] = mapped_column(ForeignKey("wakeups.id"))
    agent_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="requested")
    requested_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    # The command that carries this request to the agent; collapsed targets
    # share the agent's pending command.
    command_id: Mapped[str | None] = mapped_column(String(32), default=None)
    command_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    published_at: Mapped[float | None] = mapped_column(Float, default=None)
    delivered_at: Mapped[float | None] = mapped_column(Float, default=None)
    satisfied_at: Mapped[float | None] = mapped_column(Float, default=None)
    sync_id: Mapped[str | None] = mapped_column(String(64), default=None)
    ended_at: Mapped[float | None] = mapped_column(Float, default=None)
    # The agent's presence as the registry showed it when the request was
    # accepted (migration 0010): "offline" explains a target that waits.
    presence: Mapped[str | None] = mapped_column(String(16), default=None)


class PendingCommand(Base):
    """A signed command the broker has not yet confirmed (no PUBACK seen).

    Kept until published, so a server or broker restart re-sends it."""

    __tablename__ = "pending_commands"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class Task(Base):
    """A task handed to an agent at its next sync; its result comes with the next report."""

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_agent_state", "agent_id", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(128))
    # pending | sent | done | failed | unsupported
    state: Mapped[str] = mapped_column(String(16), default="pending")
    sent_at: Mapped[float | None] = mapped_column(Float, default=None)
    result_at: Mapped[float | None] = mapped_column(Float, default=None)
    detail: Mapped[str] = mapped_column(Text, default="")


class WolRequest(Base):
    """One Wake-on-LAN request for one target machine, and its outcome."""

    __tablename__ = "wol_requests"
    __table_args__ = (
        Index("ix_wol_requests_agent_state", "agent_id", "state"),
        Index("ix_wol_requests_state_deadline", "state", "deadline"),
        # The cap on wake-ups and magic packets counts the last interval's (0011).
        Index("ix_wol_requests_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    requested_by: Mapped[str] = mapped_column(String(128))
    agent_id: Mapped[str | None] = mapped_column(String(64), default=None)
    mac: Mapped[str] = mapped_column(String(17))
    # The target's last known IPv4 address and its subnet; None when unknown
    # (then no relay could be chosen).
    address: Mapped[str | None] = mapped_column(String(45), default=None)
    subnet: Mapped[str | None] = mapped_column(String(49), default=None)
    # [{"by": relay agent id or "server", "to": [addresses], "ports": [...],
    #   "command": id or None, "at": time, "result": wol_result body or None}]
    sends: Mapped[list[Any]] = mapped_column(default=list)
    state: Mapped[str] = mapped_column(String(16), default="sent")  # sent | woke | not_woken
    deadline: Mapped[float] = mapped_column(Float)
    woke_at: Mapped[float | None] = mapped_column(Float, default=None)


class AuditEntry(Base):
    """Who did what, when, to which targets, and how it ended."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_at", "at"), Index("ix_audit_actor_at", "actor", "at"),
                      Index("ix_audit_action_at", "action", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    targets: Mapped[list[Any]] = mapped_column(default=list)
    outcome: Mapped[str] = mapped_column(Text)
    ref: Mapped[str | None] = mapped_column(String(64), default=None)


class User(Base):
    """A console login; the password is kept as an argon2 hash
    (``security/users.py``)."""

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    # Every user is an admin until roles come (issue 18); kept from 0014 on.
    role: Mapped[str] = mapped_column(String(16), default="admin", server_default="admin")
    # A disabled user cannot log in and has no session.
    disabled_at: Mapped[float | None] = mapped_column(Float, default=None)
    created_by: Mapped[str | None] = mapped_column(String(128), default=None)


class ConsoleSession(Base):
    """A console login held on the server (``security/console_sessions.py``):
    the browser's cookie carries only a random secret, kept here as SHA-256;
    ``id`` is the public handle an admin lists and revokes it by."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    # The absolute end; the idle end is last_seen + console.session_idle_timeout.
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    source: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(256))


class ApiToken(Base):
    """A bearer token for an integration; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(128))
    last_used: Mapped[float | None] = mapped_column(Float, default=None)
    revoked_at: Mapped[float | None] = mapped_column(Float, default=None)
    # None: until revoked. An expired token is refused like a revoked one.
    expires_at: Mapped[float | None] = mapped_column(Float, default=None)


class EnrolToken(Base):
    """A token installers trade, with a CSR, for agent identities: up to
    ``max_uses`` of them (None: unlimited), each an ``Enrolment`` row."""

    __tablename__ = "enrol_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    groups: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)
    # The last use.
    used_at: Mapped[float | None] = mapped_column(Float, default=None)
    # The one agent id the token may enrol, if it was made for one.
    agent_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # None: unlimited. No default: the ORM would put it in place of an explicit None.
    max_uses: Mapped[int | None] = mapped_column(Integer)
    # Identities issued plus requests waiting for approval.
    uses: Mapped[int] = mapped_column(Integer, default=0)
    # Enrolments wait as pending until an admin accepts them.
    approval: Mapped[bool] = mapped_column(default=False)
    revoked_at: Mapped[float | None] = mapped_column(Float, default=None)
    revoked_by: Mapped[str | None] = mapped_column(String(128), default=None)


class Enrolment(Base):
    """One use of an enrolment token: pending (waiting for an admin), enrolled,
    rejected or expired; what the machine said it is, and the identity it got."""

    __tablename__ = "enrolments"
    __table_args__ = (
        Index("ix_enrolments_token_at", "token_id", "created_at"),
        Index("ix_enrolments_state_expires", "state", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_id: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # pending | enrolled | rejected | expired
    created_at: Mapped[float] = mapped_column(Float)
    # Until when a pending request waits for a decision.
    expires_at: Mapped[float] = mapped_column(Float)
    # The id asked for (--id or the token's), else the one made of the host name.
    requested_id: Mapped[str] = mapped_column(String(64))
    explicit_id: Mapped[bool] = mapped_column(default=False)
    hostname: Mapped[str | None] = mapped_column(String(255), default=None)
    machine: Mapped[str | None] = mapped_column(String(64), default=None)
    address: Mapped[str | None] = mapped_column(String(45), default=None)
    # The identity it got, once enrolled.
    agent_id: Mapped[str | None] = mapped_column(String(64), default=None)
    csr: Mapped[str | None] = mapped_column(Text, default=None)
    cert: Mapped[str | None] = mapped_column(Text, default=None)
    # The SHA-256 of the secret the installer polls a pending request with.
    secret_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    decided_at: Mapped[float | None] = mapped_column(Float, default=None)
    decided_by: Mapped[str | None] = mapped_column(String(128), default=None)
    detail: Mapped[str] = mapped_column(Text, default="")


class Setting(Base):
    """One console setting (WoL addresses, hints, notifications), as JSON."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class HandledEvent(Base):
    """A broker message some replica has applied, by the digest of its topic
    and bytes: QoS 1 redelivers, and replicas may both receive one (presence
    in ``shared`` mode), yet each is applied once. Pruned after a day."""

    __tablename__ = "handled_events"
    __table_args__ = (Index("ix_handled_events_at", "at"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255))
    at: Mapped[float] = mapped_column(Float)
    # Which replica applied it (host:pid): what an operator, or a test, reads.
    handled_by: Mapped[str] = mapped_column(String(128))


class Campaign(Base):
    """A wake campaign (docs/campaigns.md): whom to wake, when, and how.
    Deleting one sets ``deleted_at``; its runs and reports stay."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_next_run", "enabled", "next_run_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    # {"groups": [...], "agents": [...]}: resolved when each run starts.
    targets: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # epns.campaign_schedule.Schedule.as_dict()
    schedule: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # {"wol": bool, "settle": s, "wol_addresses": [...], "wol_ports": [...]}
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[float] = mapped_column(Float)
    # Slots up to this time have been handed out (run or missed).
    checked_until: Mapped[float] = mapped_column(Float)
    next_run_at: Mapped[float | None] = mapped_column(Float, default=None)
    deleted_at: Mapped[float | None] = mapped_column(Float, default=None)


class CampaignRun(Base):
    """One run of a campaign, scheduled or started by hand, or a slot missed.
    The replica that advances it holds a lease (``claimed_by`` until
    ``lease_until``), taken by a conditional UPDATE."""

    __tablename__ = "campaign_runs"
    __table_args__ = (UniqueConstraint("campaign_id", "slot", "trigger"),
                      Index("ix_campaign_runs_state", "state"),
                      Index("ix_campaign_runs_campaign_slot", "campaign_id", "slot"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | manual
    slot: Mapped[float] = mapped_column(Float)
    window_end: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))  # pending | running | done | missed
    requested_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    claimed_by: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_until: Mapped[float | None] = mapped_column(Float, default=None)
    detail: Mapped[str] = mapped_column(Text, default="")


class CampaignTarget(Base):
    """One agent of a run: queued -> (wol_sent ->) wake_queued -> wake_sent,
    or not_sent when the window ended first. The wake-up's own state (its
    ``WakeTarget``) says whether it synced."""

    __tablename__ = "campaign_targets"
    __table_args__ = (Index("ix_campaign_targets_run_phase", "run_id", "phase"),
                      UniqueConstraint("run_id", "agent_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("campaign_runs.id"))
    agent_id: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(16), default="queued")
    # Presence when the run started.
    presence: Mapped[str | None] = mapped_column(String(16), default=None)
    wol_request_id: Mapped[str | None] = mapped_column(String(32), default=None)
    wol_sent_at: Mapped[float | None] = mapped_column(Float, default=None)
    woke_at: Mapped[float | None] = mapped_column(Float, default=None)
    # The Idempotency-Key of the wake-up batch it is in, so a batch a crash
    # interrupted is sent again as the same wake-up, never twice.
    wake_key: Mapped[str | None] = mapped_column(String(64), default=None)
    wake_ttl: Mapped[float | None] = mapped_column(Float, default=None)
    wakeup_id: Mapped[str | None] = mapped_column(String(32), default=None)
    wake_sent_at: Mapped[float | None] = mapped_column(Float, default=None)
    detail: Mapped[str] = mapped_column(Text, default="")
