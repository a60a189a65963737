"""The messages of the wire contract, sans-IO: encode, decode, sign, verify.

Commands (server to agent) are signed with the server's Ed25519 key, and agents
pin the public key, so a shared or compromised broker cannot command them::

    {"v": 1, "id": "…", "type": "wake", "target": "agent:laptop-1",
     "iat": 1700000000.0, "exp": 1700000300.0, "body": {}, "sig": "…"}

The signature covers the canonical JSON of every field but ``sig``. ``target``
is ``agent:{id}``, ``group:{name}`` or ``all``; it is signed, so a command cannot
be re-addressed to another agent. Events (agent to server) and presence are not
signed: the broker's ACL already ties each topic to one identity.
"""

from __future__ import annotations

import binascii
import hashlib
import ipaddress
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature

from epns import fields
from epns.errors import (
    BadSignature,
    ExpiredMessage,
    MalformedMessage,
    ReplayedMessage,
    UnknownSigner,
    WrongTarget,
)
from epns.sync_contract import MAX_WAKES
from epns.tokens import PrivateKey, PublicKey, b64decode, b64encode, raw_public
from epns.wol import parse_mac, wol_result_body

__all__ = [
    "CLOCK_SKEW",
    "MAX_DETAIL",
    "MAX_MESSAGE_BYTES",
    "TARGET_ALL",
    "Command",
    "CommandType",
    "Event",
    "EventType",
    "Interface",
    "KeyLookup",
    "Presence",
    "PresenceState",
    "ReplayGuard",
    "check_fresh",
    "check_target",
    "decode_command",
    "decode_event",
    "decode_presence",
    "encode_event",
    "encode_presence",
    "key_id",
    "sign_command",
    "target_agent",
    "target_group",
    "verify_command",
]

VERSION = 1
# A command may be judged by a clock that is a little off from the server's.
CLOCK_SKEW = 60.0
MAX_MESSAGE_BYTES = 16 * 1024


class CommandType(StrEnum):
    """What the server asks an agent to do."""

    WAKE = "wake"
    WOL = "wol"
    CONFIG = "config"
    PING = "ping"
    # A trust announcement (epns.trust) for every agent: next key, next CA.
    TRUST = "trust"
    # Hold off sleep, or stop (epns.keep_awake): the subnet's elected relay.
    KEEP_AWAKE = "keep_awake"


class EventType(StrEnum):
    """What an agent reports."""

    ACK = "ack"
    REJECT = "reject"
    SYNC = "sync"
    WOL_RESULT = "wol_result"
    PONG = "pong"
    # Whether the agent holds sleep off now, and why not (epns.keep_awake).
    KEEP_AWAKE = "keep_awake"


@dataclass(frozen=True, slots=True)
class Command:
    """A command as the server means it; signing adds nothing to it."""

    type: CommandType
    target: str
    issued_at: float
    expires_at: float
    body: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def fields(self) -> dict[str, Any]:
        """The signed fields, in wire form."""
        return {
            "v": VERSION,
            "id": self.id,
            "type": self.type.value,
            "target": self.target,
            "iat": self.issued_at,
            "exp": self.expires_at,
            "body": dict(self.body),
        }


def target_agent(agent_id: str) -> str:
    """The target of a command for one agent."""
    return f"agent:{agent_id}"


def target_group(group: str) -> str:
    """The target of a command for a group."""
    return f"group:{group}"


TARGET_ALL = "all"


def _canonical(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def key_id(key: PublicKey) -> str:
    """The id of a signing key: the first 8 bytes of SHA-256 of the raw key,
    in hex. Signed messages name it (``kid``), so an agent that trusts two
    keys during a rotation picks the right one instead of trying each."""
    return hashlib.sha256(raw_public(key)).digest()[:8].hex()


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, ASCII."""
    return _canonical(fields)


def sign_command(command: Command, key: PrivateKey) -> bytes:
    """The wire bytes of ``command``, signed with the server's key; ``kid``
    names the key (agents older than rotation ignore it: it is signed like
    any other field)."""
    fields = {**command.fields(), "kid": key_id(key.public_key())}
    signature = key.sign(_canonical(fields))
    return _canonical({**fields, "sig": b64encode(signature)})


# Finds the key a message names by its ``kid`` (None: the message names none,
# as a server older than rotation signs); raises UnknownSigner.
KeyLookup = Callable[[str | None], PublicKey]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _load_object(raw: bytes, what: str) -> dict[str, Any]:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"{what} of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError as exc:
        # 16 KiB of brackets nest deeper than the parser's stack.
        raise MalformedMessage(f"{what} is nested too deeply to be a message") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"{what} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedMessage(f"{what} is not a JSON object")
    if data.get("v") != VERSION:
        raise MalformedMessage(f"{what} has version {data.get('v')!r}, expected {VERSION}")
    return data


def decode_command(raw: bytes, key: PublicKey | KeyLookup) -> Command:
    """Parse a command and check its signature; expiry and replay are separate.
    ``key`` is the pinned key, or a lookup of the trusted keys by ``kid``."""
    data = _load_object(raw, "command")
    verify_signed(data, key, "command")
    try:
        return Command(
            id=str(data["id"]),
            type=CommandType(data["type"]),
            target=str(data["target"]),
            issued_at=float(data["iat"]),
            expires_at=float(data["exp"]),
            body=dict(data["body"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise MalformedMessage(f"command lacks a valid field: {exc}") from exc


def verify_signed(data: dict[str, Any], key: PublicKey | KeyLookup, what: str) -> None:
    """Check the signature of a signed object (``sig`` popped from ``data``)
    with ``key`` or the key its ``kid`` names; BadSignature says which failed."""
    signature = data.pop("sig", None)
    if not isinstance(signature, str):
        raise BadSignature(f"{what} has no signature")
    kid = data.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise MalformedMessage(f"{what}.kid is not a string")
    if isinstance(key, PublicKey):
        # One pinned key: a kid naming another is a clear refusal, not a
        # signature that merely fails to verify.
        if kid is not None and kid != key_id(key):
            raise UnknownSigner(f"{what} is signed by key {kid}, which is not the pinned "
                                f"key {key_id(key)}")
        public = key
    else:
        public = key(kid)
    try:
        public.verify(b64decode(signature), _canonical(data))
    except (InvalidSignature, ValueError, binascii.Error) as exc:
        raise BadSignature(
            f"{what} signature does not verify against server key {key_id(public)}") from exc


def check_fresh(command: Command, *, now: float, skew: float = CLOCK_SKEW) -> None:
    """Raise ExpiredMessage unless ``command`` is valid at ``now``."""
    if command.expires_at + skew < now:
        raise ExpiredMessage(
            f"command {command.id} expired {now - command.expires_at:.0f}s ago"
        )
    if command.issued_at - skew > now:
        raise ExpiredMessage(
            f"command {command.id} is issued {command.issued_at - now:.0f}s in the future "
            "(check the clocks)"
        )


def check_target(command: Command, agent_id: str, groups: frozenset[str]) -> None:
    """Raise WrongTarget unless the command addresses this agent."""
    target = command.target
    if target == TARGET_ALL or target == target_agent(agent_id):
        return
    if target.startswith("group:") and target[6:] in groups:
        return
    raise WrongTarget(f"command {command.id} is for {target!r}, not for {agent_id!r}")


class ReplayGuard:
    """Remembers accepted command ids until they expire, in bounded memory.

    Pure state: the caller passes the clock. Ids are forgotten once their
    command could no longer pass ``check_fresh`` anyway, so forgetting them
    cannot let a replay through.
    """

    def __init__(self, capacity: int = 10_000, skew: float = CLOCK_SKEW) -> None:
        self._expiry: dict[str, float] = {}
        self._capacity = capacity
        self._skew = skew

    def __len__(self) -> int:
        return len(self._expiry)

    def accept(self, command: Command, *, now: float) -> None:
        """Record ``command``; raise ReplayedMessage if its id was seen."""
        if command.id in self._expiry:
            raise ReplayedMessage(f"command {command.id} was already accepted")
        if len(self._expiry) >= self._capacity:
            self._forget_expired(now)
        if len(self._expiry) >= self._capacity:
            # Still full of live ids: drop the one that expires first. Its
            # command has the least time left in which it could be replayed.
            del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
        self._expiry[command.id] = command.expires_at

    def _forget_expired(self, now: float) -> None:
        horizon = now - self._skew
        self._expiry = {cid: exp for cid, exp in self._expiry.items() if exp >= horizon}


def verify_command(
    raw: bytes,
    key: PublicKey | KeyLookup,
    *,
    agent_id: str,
    groups: frozenset[str],
    replay: ReplayGuard,
    now: float,
) -> Command:
    """Everything an agent checks before acting: signature, time, target, replay."""
    command = decode_command(raw, key)
    check_fresh(command, now=now)
    check_target(command, agent_id, groups)
    replay.accept(command, now=now)
    return command


@dataclass(frozen=True, slots=True)
class Event:
    """An agent's report to the server; ``ref`` is the command id it answers."""

    type: EventType
    at: float
    ref: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict)


def encode_event(event: Event) -> bytes:
    """Wire bytes of an event."""
    return _canonical(
        {"v": VERSION, "type": event.type.value, "at": event.at, "ref": event.ref,
         "body": dict(event.body)}
    )


def decode_event(raw: bytes) -> Event:
    """Parse an event and check every field (``epns.fields``); MalformedMessage
    names the first field that breaks the contract. The body keeps only the
    fields its type defines: a newer agent's extra fields are ignored."""
    data = _load_object(raw, "event")
    try:
        kind = EventType(str(data.get("type")))
    except ValueError as exc:
        raise MalformedMessage(f"event.type: {data.get('type')!r} is not an event type") from exc
    ref = data.get("ref")
    return Event(
        type=kind,
        at=fields.timestamp(data.get("at"), "event.at"),
        ref=None if ref is None else fields.identifier(ref, "event.ref"),
        body=_EVENT_BODIES[kind](fields.mapping(data.get("body") or {}, "event.body")),
    )


# What an event body may hold, per type. Lengths are what the server keeps.
MAX_DETAIL = 500


def _ack_body(body: dict[str, Any]) -> dict[str, Any]:
    kind = body.get("type")
    return {} if kind is None else {"type": fields.text(kind, "event.body.type", max_length=32)}


def _reject_body(body: dict[str, Any]) -> dict[str, Any]:
    return {"reason": fields.prose(body.get("reason", ""), "event.body.reason",
                                   max_length=MAX_DETAIL)}


def _sync_body(body: dict[str, Any]) -> dict[str, Any]:
    wakes = fields.array(body.get("wakes", []), "event.body.wakes", max_items=MAX_WAKES)
    started = body.get("started_at")
    sync_id = body.get("sync_id")
    return {
        "ok": fields.flag(body.get("ok"), "event.body.ok"),
        "detail": fields.prose(body.get("detail", ""), "event.body.detail",
                               max_length=MAX_DETAIL),
        "reason": fields.text(body.get("reason", ""), "event.body.reason", max_length=32),
        "started_at": None if started is None else fields.timestamp(
            started, "event.body.started_at"),
        "sync_id": None if sync_id is None else fields.identifier(sync_id,
                                                                  "event.body.sync_id"),
        "wakes": [fields.identifier(w, f"event.body.wakes[{i}]") for i, w in enumerate(wakes)],
    }


def _empty_body(_body: dict[str, Any]) -> dict[str, Any]:
    return {}


def _keep_awake_body(body: dict[str, Any]) -> dict[str, Any]:
    return {"holding": fields.flag(body.get("holding"), "event.body.holding"),
            "detail": fields.prose(body.get("detail", ""), "event.body.detail",
                                   max_length=MAX_DETAIL)}


_EVENT_BODIES: dict[EventType, Callable[[dict[str, Any]], dict[str, Any]]] = {
    EventType.ACK: _ack_body,
    EventType.REJECT: _reject_body,
    EventType.SYNC: _sync_body,
    EventType.WOL_RESULT: wol_result_body,
    EventType.PONG: _empty_body,
    EventType.KEEP_AWAKE: _keep_awake_body,
}


class PresenceState(StrEnum):
    """Presence as published by the agent (birth) or the broker (will)."""

    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Interface:
    """One network interface of an agent, for Wake-on-LAN relay election."""

    address: str
    prefix: int
    mac: str | None = None


@dataclass(frozen=True, slots=True)
class Presence:
    """The retained birth or last-will message of an agent."""

    state: PresenceState
    at: float
    route: str | None = None
    version: str | None = None
    hostname: str | None = None
    interfaces: tuple[Interface, ...] = ()
    # Whether the agent may be told to hold off sleep (its config's
    # wol.allow_keep_awake); None from an agent older than keep-awake.
    keep_awake: bool | None = None


def encode_presence(presence: Presence) -> bytes:
    """Wire bytes of a presence message."""
    return _canonical(
        {
            "v": VERSION,
            "state": presence.state.value,
            "at": presence.at,
            "route": presence.route,
            "version": presence.version,
            "hostname": presence.hostname,
            "interfaces": [
                {"address": i.address, "prefix": i.prefix, "mac": i.mac}
                for i in presence.interfaces
            ],
            **({} if presence.keep_awake is None else {"keep_awake": presence.keep_awake}),
        }
    )


# One entry per address: a container host has one per veth. The 16 KiB
# message bound (about 200 entries) is the real limit; this only stops a list
# of tiny entries.
MAX_INTERFACES = 512


def decode_presence(raw: bytes) -> Presence:
    """Parse a presence message and check every field (``epns.fields``);
    MalformedMessage names the first field that breaks the contract."""
    data = _load_object(raw, "presence")
    try:
        state = PresenceState(str(data.get("state")))
    except ValueError as exc:
        raise MalformedMessage(
            f"presence.state: {data.get('state')!r} is not online or offline") from exc
    interfaces = fields.array(data.get("interfaces") or [], "presence.interfaces",
                              max_items=MAX_INTERFACES)
    return Presence(
        state=state,
        at=fields.timestamp(data.get("at"), "presence.at"),
        route=fields.optional_text(data.get("route"), "presence.route", max_length=128),
        version=fields.optional_text(data.get("version"), "presence.version", max_length=64),
        hostname=fields.optional_text(data.get("hostname"), "presence.hostname",
                                      max_length=255),
        interfaces=tuple(_interface(item, f"presence.interfaces[{index}]")
                         for index, item in enumerate(interfaces)),
        keep_awake=None if data.get("keep_awake") is None else fields.flag(
            data.get("keep_awake"), "presence.keep_awake"),
    )


def _interface(value: Any, where: str) -> Interface:
    item = fields.mapping(value, where)
    raw_address = fields.text(item.get("address"), f"{where}.address", max_length=64)
    try:
        address = ipaddress.ip_address(raw_address)
    except ValueError as exc:
        raise MalformedMessage(f"{where}.address: {raw_address!r} is not an IP address") from exc
    prefix = fields.integer(item.get("prefix"), f"{where}.prefix", low=0,
                            high=address.max_prefixlen)
    mac = item.get("mac")
    if mac is not None:
        mac = fields.text(mac, f"{where}.mac", max_length=64)
        # A link-layer address that is no Ethernet MAC (InfiniBand's are 20
        # bytes) is kept out: no magic packet can wake that interface.
        try:
            mac = parse_mac(mac)
        except MalformedMessage:
            mac = None
    return Interface(str(address), prefix, mac)
