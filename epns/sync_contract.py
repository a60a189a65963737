"""The sync exchange between an agent and the management server, sans-IO.

A sync is two HTTP steps on one resource, ``sync_path(agent_id)``: the agent
POSTs a report of its changed data, then (when ``sync.fetch`` is on) GETs the
server's reply: config hints and tasks. The results of those tasks travel with
the next report. JSON is the default wire format::

    POST  {"v": 1, "agent_id": "a001", "sync_id": "9f…", "started_at": 1700000000.5,
           "reason": "wake", "wakes": ["c1"], "changes": {"hostname": "pc-1"},
           "results": [{"task_id": "t1", "status": "done", "detail": ""}]}
    GET   {"v": 1, "sync_interval": 300.0, "keepalive": {"proxy": 45},
           "tasks": [{"id": "t2", "type": "inventory", "body": {}}]}

XML spells the same document with one rule: the root (``report`` or
``reply``) holds one element per field; a nested object's members are
``<item key="…">`` elements, an array's are ``<item>`` elements; every value
names its type in ``type`` (string, the default, int, float, bool, null,
object, array)::

    <report><v type="int">1</v><agent_id>a001</agent_id>
      <wakes type="array"><item>c1</item></wakes>
      <changes type="object"><item key="hostname">pc-1</item></changes>…</report>

Unknown fields are ignored, so either side can add one; a known field with
the wrong shape is a MalformedMessage naming it. XML is parsed only through
defusedxml with DTDs forbidden, so a bomb or an external entity is refused
(UnsafeXML) before anything is expanded or fetched.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from epns import fields, topics
from epns.errors import MalformedMessage, TopicError, UnsafeXML

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET  # building only: parsing goes through defusedxml

__all__ = [
    "KEEPALIVE_RANGE",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_SYNC_INTERVAL",
    "MAX_WAKES",
    "MIN_SYNC_INTERVAL",
    "ROUTE_KINDS",
    "VERSION",
    "SyncFormat",
    "SyncReason",
    "SyncReply",
    "SyncReport",
    "Task",
    "TaskResult",
    "TaskStatus",
    "TaskType",
    "apply_set_config",
    "decode_reply",
    "decode_report",
    "encode_reply",
    "encode_report",
    "format_of",
    "retry_after_seconds",
    "sync_path",
]

VERSION = 1
# Large enough for a full inventory, small enough that a hostile peer cannot
# make the other side buffer much.
MAX_BYTES = 1024 * 1024
# Deeper nesting is no inventory: it is an attempt to exhaust the recursion.
MAX_DEPTH = 32
# Per report: a wake-up can only be in so many syncs, a reply carries at
# most 100 tasks (the server's open tasks per agent), a key is a name.
MAX_WAKES = 256
MAX_RESULTS = 256
MAX_RESULT_DETAIL = 2000
MAX_KEY = 256
# A server hint below this would turn the fleet into a flood of syncs.
MIN_SYNC_INTERVAL = 30.0
MAX_SYNC_INTERVAL = 7 * 24 * 3600.0
ROUTE_KINDS = ("primary", "fallback", "proxy", "websocket")
KEEPALIVE_RANGE = (5, 65535)

# Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def sync_path(agent_id: str) -> str:
    """The sync resource of one agent: POST a report, GET the server's changes."""
    return f"/api/v1/agents/{topics.check_name(agent_id)}/sync"


class SyncFormat(StrEnum):
    """The two wire formats; the value is what ``sync.format`` says."""

    JSON = "json"
    XML = "xml"

    @property
    def content_type(self) -> str:
        """The media type of this format."""
        return f"application/{self.value}"


def format_of(content_type: str) -> SyncFormat:
    """The format a Content-Type header names; MalformedMessage for any other."""
    media = content_type.split(";", 1)[0].strip().lower()
    for fmt in SyncFormat:
        if media == fmt.content_type:
            return fmt
    raise MalformedMessage(f"content type {media or 'none'!r} is not a sync format "
                           "(application/json or application/xml)")


class SyncReason(StrEnum):
    """Why the agent syncs."""

    CONNECT = "connect"
    WAKE = "wake"
    INTERVAL = "interval"
    MANUAL = "manual"
    # After a failed sync, with backoff; it carries the failed sync's wakes.
    RETRY = "retry"


class TaskType(StrEnum):
    """The tasks an agent knows; it answers any other type as unsupported."""

    INVENTORY = "inventory"  # send the full inventory with the next report
    SET_CONFIG = "set_config"  # apply these hints (the reply's own shape), and confirm
    # Renew the identity now, whatever its age (a CA rotation asks it); the
    # result says the renewal started, the agent's row shows when it is done.
    RENEW = "renew"


class TaskStatus(StrEnum):
    """How the agent answered a task."""

    DONE = "done"
    FAILED = "failed"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class Task:
    """Something the server asks the agent to do; its result comes with the next report."""

    id: str
    type: str
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskResult:
    """The agent's answer to one task."""

    task_id: str
    status: TaskStatus
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What the agent POSTs: its changed data, the wakes it answers, task results."""

    agent_id: str
    sync_id: str
    started_at: float
    reason: SyncReason
    # The command ids of the wake-ups it answers. Named after the wire key
    # "wakes", which keeps its old name for compatibility (servers read it).
    wakes: tuple[str, ...] = ()
    changes: Mapping[str, Any] = field(default_factory=dict)
    results: tuple[TaskResult, ...] = ()


@dataclass(frozen=True, slots=True)
class SyncReply:
    """What the GET answers: config hints (None / empty = keep yours) and tasks."""

    sync_interval: float | None = None
    keepalive: Mapping[str, int] = field(default_factory=dict)
    tasks: tuple[Task, ...] = ()
    # The server's signed trust announcement (epns.trust), once it has rotated
    # a key: an agent that was offline when it went out learns it here.
    trust: str | None = None


def apply_set_config(reply: SyncReply, task: Task) -> SyncReply:
    """``reply`` with the hints of a set_config task laid over its own;
    MalformedMessage names the field of the task's body that is wrong."""
    interval, keepalive = _hints(task.body, f"task {task.id} body")
    return replace(reply, sync_interval=reply.sync_interval if interval is None else interval,
                   keepalive={**reply.keepalive, **keepalive})


# --- encoding ---------------------------------------------------------------------


def encode_report(report: SyncReport, fmt: SyncFormat = SyncFormat.JSON) -> bytes:
    """Wire bytes of a report; MalformedMessage when ``changes`` holds a value
    the format cannot carry (a set, NaN, a control character in XML, …)."""
    return _encode("report", {
        "v": VERSION,
        "agent_id": report.agent_id,
        "sync_id": report.sync_id,
        "started_at": report.started_at,
        "reason": report.reason.value,
        "wakes": list(report.wakes),
        "changes": dict(report.changes),
        "results": [{"task_id": r.task_id, "status": r.status.value, "detail": r.detail}
                    for r in report.results],
    }, fmt)


def encode_reply(reply: SyncReply, fmt: SyncFormat = SyncFormat.JSON) -> bytes:
    """Wire bytes of a reply; a hint left at None is left out."""
    fields: dict[str, Any] = {"v": VERSION}
    if reply.sync_interval is not None:
        fields["sync_interval"] = reply.sync_interval
    fields["keepalive"] = dict(reply.keepalive)
    fields["tasks"] = [{"id": t.id, "type": t.type, "body": dict(t.body)} for t in reply.tasks]
    if reply.trust is not None:
        fields["trust"] = reply.trust
    return _encode("reply", fields, fmt)


def _encode(root: str, fields: dict[str, Any], fmt: SyncFormat) -> bytes:
    plain = _plain(fields, root, 0)
    if fmt is SyncFormat.JSON:
        return json.dumps(plain, separators=(",", ":")).encode()
    import xml.etree.ElementTree as ET  # noqa: PLC0415 (XML only: idle memory)

    element = ET.Element(root)
    for name, value in plain.items():
        _to_xml(ET.SubElement(element, name), value, f"{root}.{name}")
    # ElementTree writes a carriage return in text as is, and every XML parser
    # turns it into a newline; a character reference keeps it. Outside text a
    # raw CR cannot occur: attribute values are escaped by ElementTree.
    document: bytes = ET.tostring(element, encoding="utf-8", xml_declaration=True)
    return document.replace(b"\r", b"&#13;")


def _plain(value: Any, where: str, depth: int) -> Any:
    """``value`` in plain JSON types (dict, list, str, int, float, bool, None),
    or a MalformedMessage naming where it holds something else."""
    if depth > MAX_DEPTH:
        raise MalformedMessage(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    # Enum members and other subclasses travel as their plain value.
    if isinstance(value, str):
        return _storable(str(value), where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MalformedMessage(f"{where}: {value} is not a finite number")
        return float(value)
    if isinstance(value, Mapping):
        return {_plain_key(key, where): _plain(item, f"{where}.{key}", depth + 1)
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value)]
    raise MalformedMessage(f"{where}: a {type(value).__name__} cannot be sent")


def _plain_key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise MalformedMessage(f"{where}: key {key!r} is not a string")
    if len(key) > MAX_KEY:
        raise MalformedMessage(f"{where}: a key of {len(key)} characters; at most {MAX_KEY}")
    return _storable(str(key), where)


def _storable(text: str, where: str) -> str:
    """``text``, unless no database can store it: a NUL (PostgreSQL's text and
    JSON refuse it) or a lone surrogate (not UTF-8 at all)."""
    if "\x00" in text:
        raise MalformedMessage(f"{where}: holds a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedMessage(f"{where}: holds a lone surrogate, not valid Unicode") from exc
    return text


def _to_xml(element: ET.Element, value: Any, where: str) -> None:
    """Write a plain value into ``element`` (see the module's XML rule)."""
    import xml.etree.ElementTree as ET  # noqa: PLC0415 (XML only: idle memory)

    if isinstance(value, dict):
        element.set("type", "object")
        for key, item in value.items():
            _to_xml(ET.SubElement(element, "item", key=_xml_text(key, where)), item,
                    f"{where}.{key}")
    elif isinstance(value, list):
        element.set("type", "array")
        for index, item in enumerate(value):
            _to_xml(ET.SubElement(element, "item"), item, f"{where}[{index}]")
    elif value is None:
        element.set("type", "null")
    elif isinstance(value, bool):
        element.set("type", "bool")
        element.text = "true" if value else "false"
    elif isinstance(value, int | float):
        element.set("type", "int" if isinstance(value, int) else "float")
        element.text = repr(value)
    else:
        element.text = _xml_text(value, where)


def _xml_text(text: str, where: str) -> str:
    if _NOT_XML.search(text):
        raise MalformedMessage(f"{where}: holds a control character XML cannot carry "
                               "(use sync.format = 'json')")
    return text


# --- decoding ---------------------------------------------------------------------


def decode_report(raw: bytes, fmt: SyncFormat = SyncFormat.JSON, *,
                  max_bytes: int = MAX_BYTES) -> SyncReport:
    """Parse a report (the server's side); MalformedMessage names what is wrong."""
    data = _load(raw, fmt, "report", max_bytes)
    agent_id = _string(data.get("agent_id"), "report.agent_id")
    try:
        topics.check_name(agent_id)
    except TopicError as exc:
        raise MalformedMessage(f"report.agent_id: {exc}") from exc
    return SyncReport(
        agent_id=agent_id,
        sync_id=fields.identifier(data.get("sync_id"), "report.sync_id"),
        started_at=fields.timestamp(data.get("started_at"), "report.started_at"),
        reason=_choice(SyncReason, data.get("reason"), "report.reason"),
        wakes=tuple(fields.identifier(item, f"report.wakes[{index}]") for index, item
                    in enumerate(fields.array(data.get("wakes", []), "report.wakes",
                                              max_items=MAX_WAKES))),
        changes=_object(data.get("changes", {}), "report.changes"),
        results=tuple(_result(item, f"report.results[{index}]") for index, item
                      in enumerate(fields.array(data.get("results", []), "report.results",
                                                max_items=MAX_RESULTS))),
    )


# A trust announcement lists a few keys and CA certificates: well under this.
MAX_TRUST = 64 * 1024


def decode_reply(raw: bytes, fmt: SyncFormat = SyncFormat.JSON, *,
                 max_bytes: int = MAX_BYTES) -> SyncReply:
    """Parse a reply (the agent's side); MalformedMessage names what is wrong.
    A task of an unknown type is kept: the agent answers it as unsupported."""
    data = _load(raw, fmt, "reply", max_bytes)
    interval, keepalive = _hints(data, "reply")
    tasks = _array(data.get("tasks", []), "reply.tasks")
    return SyncReply(
        sync_interval=interval,
        keepalive=keepalive,
        tasks=tuple(_task(item, f"reply.tasks[{index}]") for index, item in enumerate(tasks)),
        trust=fields.optional_text(data.get("trust"), "reply.trust", max_length=MAX_TRUST),
    )


def _load(raw: bytes, fmt: SyncFormat, root: str, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise MalformedMessage(f"{root} of {len(raw)} bytes exceeds the limit of {max_bytes}")
    loaded = _load_json(raw, root) if fmt is SyncFormat.JSON else _load_xml(raw, root)
    data: dict[str, Any] = _plain(loaded, root, 0)
    if data.get("v") != VERSION:
        raise MalformedMessage(f"{root}.v: version {data.get('v')!r}, expected {VERSION}")
    return data


def _load_json(raw: bytes, root: str) -> dict[str, Any]:
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise MalformedMessage(f"{root}: nested deeper than {MAX_DEPTH} levels") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"{root} is not JSON: {exc}") from exc
    return _object(data, root)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _load_xml(raw: bytes, root: str) -> dict[str, Any]:
    # XML only: kept out of the idle memory of agents that sync JSON.
    import xml.etree.ElementTree as ET  # noqa: PLC0415

    import defusedxml  # noqa: PLC0415
    import defusedxml.ElementTree  # noqa: PLC0415

    try:
        element = defusedxml.ElementTree.fromstring(raw, forbid_dtd=True)
    except defusedxml.DefusedXmlException as exc:
        raise UnsafeXML(f"{root}: XML with a DTD, entity or external reference is refused "
                        f"({type(exc).__name__})") from exc
    except ET.ParseError as exc:
        raise MalformedMessage(f"{root} is not well-formed XML: {exc}") from exc
    if element.tag != root:
        raise MalformedMessage(f"{root}: the XML root is <{element.tag}>, expected <{root}>")
    return {child.tag: _from_xml(child, f"{root}.{child.tag}", 1) for child in element}


def _from_xml(element: ET.Element, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise MalformedMessage(f"{where}: nested deeper than {MAX_DEPTH} levels")
    kind = element.get("type", "string")
    text = element.text or ""
    try:
        scalar = _XML_SCALARS.get(kind)
        if scalar is not None:
            return scalar(text)
    except ValueError as exc:
        raise MalformedMessage(f"{where}: {text!r} is not a valid {kind}") from exc
    if kind == "array":
        return [_from_xml(item, f"{where}[{index}]", depth + 1)
                for index, item in enumerate(_items(element, where))]
    if kind == "object":
        return {_key(item, where): _from_xml(item, f"{where}.{item.get('key')}", depth + 1)
                for item in _items(element, where)}
    raise MalformedMessage(f"{where}: unknown type {kind!r}")


def _xml_bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(text)
    return text == "true"


def _xml_null(text: str) -> None:
    if text.strip():
        raise ValueError(text)


_XML_SCALARS: dict[str, Any] = {
    "string": str, "int": int, "float": float, "bool": _xml_bool, "null": _xml_null,
}


def _items(element: ET.Element, where: str) -> list[ET.Element]:
    items = list(element)
    for item in items:
        if item.tag != "item":
            raise MalformedMessage(f"{where}: <{item.tag}> where an <item> belongs")
    return items


def _key(item: ET.Element, where: str) -> str:
    key = item.get("key")
    if key is None:
        raise MalformedMessage(f"{where}: an object member has no key attribute")
    return key


# --- fields -----------------------------------------------------------------------


def _hints(data: Mapping[str, Any], where: str) -> tuple[float | None, dict[str, int]]:
    interval = data.get("sync_interval")
    if interval is not None:
        interval = _number(interval, f"{where}.sync_interval")
        if not MIN_SYNC_INTERVAL <= interval <= MAX_SYNC_INTERVAL:
            raise MalformedMessage(f"{where}.sync_interval: {interval:g} s is outside "
                                   f"{MIN_SYNC_INTERVAL:g}..{MAX_SYNC_INTERVAL:g}")
    keepalive = _object(data.get("keepalive", {}), f"{where}.keepalive")
    return interval, {kind: _keepalive(kind, value, f"{where}.keepalive.{kind}")
                      for kind, value in keepalive.items()}


def _keepalive(kind: str, value: Any, where: str) -> int:
    if kind not in ROUTE_KINDS:
        raise MalformedMessage(f"{where}: not a route kind ({', '.join(ROUTE_KINDS)})")
    low, high = KEEPALIVE_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MalformedMessage(f"{where}: expected whole seconds {low}..{high}, got {value!r}")
    return value


def _task(value: Any, where: str) -> Task:
    data = _object(value, where)
    return Task(id=_string(data.get("id"), f"{where}.id"),
                type=_string(data.get("type"), f"{where}.type"),
                body=_object(data.get("body", {}), f"{where}.body"))


def _result(value: Any, where: str) -> TaskResult:
    data = _object(value, where)
    return TaskResult(task_id=fields.identifier(data.get("task_id"), f"{where}.task_id"),
                      status=_choice(TaskStatus, data.get("status"), f"{where}.status"),
                      detail=fields.prose(data.get("detail", ""), f"{where}.detail",
                                          max_length=MAX_RESULT_DETAIL))


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedMessage(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedMessage(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except OverflowError as exc:  # an int of hundreds of digits
        raise MalformedMessage(f"{where}: a number out of range") from exc


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedMessage(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedMessage(f"{where}: expected an array, got {type(value).__name__}")
    return value


E = TypeVar("E", bound=StrEnum)


def _choice(enum: type[E], value: Any, where: str) -> E:
    try:
        return enum(value)
    except ValueError as exc:
        allowed = ", ".join(member.value for member in enum)
        raise MalformedMessage(f"{where}: {value!r} is not one of {allowed}") from exc


# --- Retry-After ------------------------------------------------------------------


def retry_after_seconds(header_value: str | None, now: float) -> float | None:
    """Seconds to wait that a Retry-After header asks for (delta-seconds or an
    HTTP-date, RFC 9110 10.2.3); None when it is absent or unreadable."""
    if header_value is None:
        return None
    value = header_value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        # An HTTP-date is always GMT; "-0000" parses as a naive time.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
