"""epns.sync_contract: the sync report and reply on the wire, JSON and XML."""

from __future__ import annotations

import json
from typing import Any

import pytest

from epns.errors import MalformedMessage, TopicError, UnsafeXML
from epns.sync_contract import (
    MAX_DEPTH,
    SyncFormat,
    SyncReason,
    SyncReply,
    SyncReport,
    Task,
    TaskResult,
    TaskStatus,
    apply_set_config,
    decode_reply,
    decode_report,
    encode_reply,
    encode_report,
    format_of,
    retry_after_seconds,
    sync_path,
)

NOW = 1_700_000_000.0

CHANGES: dict[str, Any] = {
    "hostname": "pc-1",
    "os": {"name": "Debian", "release": 12, "uptime": 3600.25, "virtual": False},
    "disks": [{"mount": "/", "free": 1.5e10}, {"mount": "C:\\", "free": 0}],
    "owner": None,
    "empty": {"list": [], "object": {}, "string": ""},
    "text": "tabs\tnewlines\r\nand <markup> & \"quotes\" ünïcödé 🚀",
    "key with spaces & <odd> chars": True,
}


def _report(**overrides: Any) -> SyncReport:
    fields: dict[str, Any] = {
        "agent_id": "a001", "sync_id": "s1", "started_at": NOW + 0.5,
        "reason": SyncReason.WAKE, "wakes": ("c1", "c2"), "changes": CHANGES,
        "results": (TaskResult("t1", TaskStatus.DONE),
                    TaskResult("t2", TaskStatus.UNSUPPORTED, "no 'reboot' tasks")),
    }
    return SyncReport(**{**fields, **overrides})


def _reply() -> SyncReply:
    return SyncReply(sync_interval=300.0, keepalive={"primary": 240, "proxy": 45},
                     tasks=(Task("t3", "inventory"),
                            Task("t4", "set_config", {"sync_interval": 60}),
                            Task("t5", "reboot", {"at": "now", "force": True})))


def _json(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


# --- paths and formats ------------------------------------------------------------


def test_sync_path_is_one_resource_per_agent() -> None:
    assert sync_path("a001") == "/api/v1/agents/a001/sync"


def test_sync_path_refuses_an_id_that_would_change_the_path() -> None:
    with pytest.raises(TopicError):
        sync_path("../admin")


@pytest.mark.parametrize(("header", "fmt"), [
    ("application/json", SyncFormat.JSON),
    ("Application/JSON; charset=utf-8", SyncFormat.JSON),
    ("application/xml", SyncFormat.XML),
])
def test_format_of_a_content_type(header: str, fmt: SyncFormat) -> None:
    assert format_of(header) is fmt
    assert fmt.content_type in ("application/json", "application/xml")


def test_a_login_page_is_not_a_sync_format() -> None:
    with pytest.raises(MalformedMessage, match="text/html"):
        format_of("text/html; charset=utf-8")


# --- round trips ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(SyncFormat))
def test_report_round_trip(fmt: SyncFormat) -> None:
    report = _report()
    assert decode_report(encode_report(report, fmt), fmt) == report


@pytest.mark.parametrize("fmt", list(SyncFormat))
def test_reply_round_trip_keeps_unknown_task_types(fmt: SyncFormat) -> None:
    reply = _reply()
    assert decode_reply(encode_reply(reply, fmt), fmt) == reply


@pytest.mark.parametrize("fmt", list(SyncFormat))
def test_an_empty_reply_changes_nothing(fmt: SyncFormat) -> None:
    assert decode_reply(encode_reply(SyncReply(), fmt), fmt) == SyncReply()


def test_json_wire_form() -> None:
    report = _report(changes={"hostname": "pc-1"}, results=(TaskResult("t1", TaskStatus.DONE),))
    assert json.loads(encode_report(report)) == {
        "v": 1, "agent_id": "a001", "sync_id": "s1", "started_at": NOW + 0.5, "reason": "wake",
        "wakes": ["c1", "c2"], "changes": {"hostname": "pc-1"},
        "results": [{"task_id": "t1", "status": "done", "detail": ""}],
    }
    assert json.loads(encode_reply(SyncReply(keepalive={"proxy": 45}))) == {
        "v": 1, "keepalive": {"proxy": 45}, "tasks": []}


def test_xml_wire_form() -> None:
    reply = SyncReply(sync_interval=300.0, tasks=(Task("t1", "inventory", {"full": True}),))
    assert encode_reply(reply, SyncFormat.XML) == (
        b"<?xml version='1.0' encoding='utf-8'?>\n"
        b'<reply><v type="int">1</v><sync_interval type="float">300.0</sync_interval>'
        b'<keepalive type="object" /><tasks type="array"><item type="object">'
        b'<item key="id">t1</item><item key="type">inventory</item>'
        b'<item key="body" type="object"><item key="full" type="bool">true</item></item>'
        b"</item></tasks></reply>")


def test_hand_written_xml_decodes() -> None:
    raw = b"""<?xml version="1.0"?>
        <report>
          <v type="int">1</v>
          <agent_id>a001</agent_id><sync_id>s1</sync_id>
          <started_at type="int">1700000000</started_at>
          <reason>connect</reason>
          <changes type="object">
            <item key="ram" type="int">16</item>
            <item key="nics" type="array"><item>eth0</item><item type="null"/></item>
          </changes>
        </report>"""
    report = decode_report(raw, SyncFormat.XML)
    assert report.started_at == NOW
    assert report.reason is SyncReason.CONNECT
    assert report.wakes == ()
    assert report.results == ()
    assert report.changes == {"ram": 16, "nics": ["eth0", None]}


@pytest.mark.parametrize("fmt", list(SyncFormat))
def test_unknown_fields_are_ignored(fmt: SyncFormat) -> None:
    raw = (_json(v=1, sync_interval=60, later_feature={"x": 1}) if fmt is SyncFormat.JSON else
           b'<reply><v type="int">1</v><later_feature>x</later_feature></reply>')
    assert decode_reply(raw, fmt).tasks == ()


# --- hostile XML ------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE reply [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<reply><v type="int">1</v><tasks type="array"><item type="object">
<item key="id">&lol9;</item><item key="type">x</item></item></tasks></reply>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE reply [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<reply><v type="int">1</v><tasks type="array"><item type="object">
<item key="id">&secret;</item><item key="type">x</item></item></tasks></reply>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE reply SYSTEM "http://127.0.0.1:9/evil.dtd">
<reply><v type="int">1</v></reply>"""

PLAIN_DTD = b"""<?xml version="1.0"?><!DOCTYPE reply><reply><v type="int">1</v></reply>"""


@pytest.mark.parametrize("raw", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PLAIN_DTD],
                         ids=["billion-laughs", "external-entity", "external-dtd", "dtd"])
def test_xml_with_a_dtd_is_refused_before_expansion(raw: bytes) -> None:
    with pytest.raises(UnsafeXML, match="DTD, entity or external reference"):
        decode_reply(raw, SyncFormat.XML)


def test_an_undeclared_entity_is_not_well_formed() -> None:
    raw = b'<reply><v type="int">1</v><x>&secret;</x></reply>'
    with pytest.raises(MalformedMessage, match="not well-formed XML"):
        decode_reply(raw, SyncFormat.XML)


def test_unsafe_xml_is_a_malformed_message() -> None:
    assert issubclass(UnsafeXML, MalformedMessage)


# --- size and depth ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(SyncFormat))
def test_decode_honours_the_byte_limit(fmt: SyncFormat) -> None:
    raw = encode_report(_report(), fmt)
    assert decode_report(raw, fmt, max_bytes=len(raw)) == _report()
    with pytest.raises(MalformedMessage, match=f"{len(raw)} bytes exceeds the limit"):
        decode_report(raw, fmt, max_bytes=len(raw) - 1)


def test_deep_json_is_refused() -> None:
    with pytest.raises(MalformedMessage, match="nested deeper"):
        decode_reply(b"[" * 200_000 + b"]" * 200_000)
    nested: Any = "x"
    for _ in range(MAX_DEPTH + 1):
        nested = {"k": nested}
    with pytest.raises(MalformedMessage, match="nested deeper"):
        decode_reply(_json(v=1, tasks=[{"id": "t", "type": "x", "body": nested}]))


def test_deep_xml_is_refused() -> None:
    depth = 5000
    raw = (b'<reply><v type="int">1</v><x type="array">' + b'<item type="array">' * depth
           + b"</item>" * depth + b"</x></reply>")
    with pytest.raises(MalformedMessage, match="nested deeper"):
        decode_reply(raw, SyncFormat.XML)


# --- wrong shapes -----------------------------------------------------------------

GOOD_REPORT = {"v": 1, "agent_id": "a001", "sync_id": "s1", "started_at": NOW,
               "reason": "interval"}


@pytest.mark.parametrize(("fields", "named"), [
    ({"v": 2}, "report.v"),
    ({"agent_id": None}, "report.agent_id"),
    ({"agent_id": "a/../b"}, "report.agent_id"),
    ({"sync_id": ""}, "report.sync_id"),
    ({"started_at": "yesterday"}, "report.started_at"),
    ({"started_at": True}, "report.started_at"),
    ({"reason": "reboot"}, "report.reason"),
    ({"wakes": "c1"}, "report.wakes"),
    ({"wakes": ["c1", 2]}, r"report.wakes\[1\]"),
    ({"changes": ["x"]}, "report.changes"),
    ({"results": [{"task_id": "t1", "status": "maybe"}]}, r"report.results\[0\].status"),
    ({"results": [{"status": "done"}]}, r"report.results\[0\].task_id"),
    ({"results": [{"task_id": "t1", "status": "done", "detail": 3}]},
     r"report.results\[0\].detail"),
    ({"sync_id": "s\x00"}, "report.sync_id"),
    ({"sync_id": "s 1"}, "report.sync_id"),
    ({"sync_id": "s" * 129}, "report.sync_id"),
    ({"wakes": ["c"] * 257}, "report.wakes: 257 items, at most 256"),
    ({"wakes": ["c\n1"]}, r"report.wakes\[0\]"),
    ({"results": [{"task_id": "t", "status": "done"}] * 257}, "report.results: 257 items"),
    ({"results": [{"task_id": "t\x00", "status": "done"}]}, r"report.results\[0\].task_id"),
    ({"started_at": 10**400}, "report.started_at"),
    ({"changes": {"k": "a\x00b"}}, "report.changes.k: holds a NUL"),
    ({"changes": {"a\x00": 1}}, "report.changes: holds a NUL"),
    ({"changes": {"k": "\ud800"}}, "report.changes.k: holds a lone surrogate"),
    ({"changes": {"k" * 257: 1}}, "report.changes: a key of 257 characters"),
])
def test_a_wrong_report_field_is_named(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(MalformedMessage, match=named):
        decode_report(_json(**{**GOOD_REPORT, **fields}))


@pytest.mark.parametrize(("fields", "named"), [
    ({"sync_interval": "often"}, "reply.sync_interval"),
    ({"sync_interval": 1}, "reply.sync_interval: 1 s is outside"),
    ({"keepalive": [60]}, "reply.keepalive"),
    ({"keepalive": {"primary": 2}}, "reply.keepalive.primary"),
    ({"keepalive": {"primary": 60.5}}, "reply.keepalive.primary"),
    ({"keepalive": {"carrier-pigeon": 60}}, "reply.keepalive.carrier-pigeon: not a route kind"),
    ({"tasks": {"id": "t1"}}, "reply.tasks"),
    ({"tasks": [{"type": "inventory"}]}, r"reply.tasks\[0\].id"),
    ({"tasks": [{"id": "t1"}]}, r"reply.tasks\[0\].type"),
    ({"tasks": [{"id": "t1", "type": "x", "body": [1]}]}, r"reply.tasks\[0\].body"),
])
def test_a_wrong_reply_field_is_named(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(MalformedMessage, match=named):
        decode_reply(_json(v=1, **fields))


@pytest.mark.parametrize(("raw", "named"), [
    (b"", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b"[1, 2]", "reply: expected an object"),
    (b'{"v": 1, "sync_interval": NaN}', "not JSON"),
    (b'{"v": 1, "sync_interval": 1e999}', "not a finite number"),
])
def test_what_is_not_a_json_reply(raw: bytes, named: str) -> None:
    with pytest.raises(MalformedMessage, match=named):
        decode_reply(raw)


@pytest.mark.parametrize(("raw", "named"), [
    (b"<report/>", "the XML root is <report>, expected <reply>"),
    (b'<reply><v type="int">one</v></reply>', "reply.v: 'one' is not a valid int"),
    (b'<reply><v type="decimal">1</v></reply>', "reply.v: unknown type 'decimal'"),
    (b'<reply><v type="int">1</v><keepalive type="object"><item>5</item></keepalive></reply>',
     "reply.keepalive: an object member has no key"),
    (b'<reply><v type="int">1</v><tasks type="array"><task/></tasks></reply>',
     "reply.tasks: <task> where an <item> belongs"),
    (b'<reply><v type="int">1</v><x type="bool">yes</x></reply>', "reply.x: 'yes' is not"),
    (b'<reply><v type="int">1</v><sync_interval type="float">inf</sync_interval></reply>',
     "reply.sync_interval: inf is not a finite number"),
    (b'<reply><v>1</v></reply>', "reply.v: version '1'"),
])
def test_what_is_not_an_xml_reply(raw: bytes, named: str) -> None:
    with pytest.raises(MalformedMessage, match=named):
        decode_reply(raw, SyncFormat.XML)


# --- what cannot be encoded -------------------------------------------------------


@pytest.mark.parametrize(("changes", "named"), [
    ({"tags": {"a", "b"}}, "report.changes.tags: a set cannot be sent"),
    ({"load": float("nan")}, "report.changes.load: nan is not a finite number"),
    ({1: "x"}, "report.changes: key 1 is not a string"),
])
@pytest.mark.parametrize("fmt", list(SyncFormat))
def test_changes_that_cannot_be_sent_are_named(changes: dict[Any, Any], named: str,
                                               fmt: SyncFormat) -> None:
    with pytest.raises(MalformedMessage, match=named):
        encode_report(_report(changes=changes), fmt)


def test_a_control_character_goes_in_json_but_not_in_xml() -> None:
    report = _report(changes={"banner": "bell\x07"})
    assert decode_report(encode_report(report)) == report
    with pytest.raises(MalformedMessage, match=r"report.changes.banner: .*use sync.format"):
        encode_report(report, SyncFormat.XML)


# --- set_config -------------------------------------------------------------------


def test_set_config_lays_its_hints_over_the_reply() -> None:
    reply = SyncReply(sync_interval=300.0, keepalive={"primary": 240, "proxy": 60})
    task = Task("t1", "set_config", {"keepalive": {"proxy": 45}})
    assert apply_set_config(reply, task) == SyncReply(
        sync_interval=300.0, keepalive={"primary": 240, "proxy": 45})
    task = Task("t2", "set_config", {"sync_interval": 120})
    assert apply_set_config(reply, task).sync_interval == 120.0


def test_a_wrong_set_config_names_its_field() -> None:
    with pytest.raises(MalformedMessage, match=r"task t1 body\.keepalive\.primary"):
        apply_set_config(SyncReply(), Task("t1", "set_config", {"keepalive": {"primary": 1}}))


# --- Retry-After ------------------------------------------------------------------


@pytest.mark.parametrize(("header", "seconds"), [
    (None, None),
    ("120", 120.0),
    (" 0 ", 0.0),
    ("Tue, 14 Nov 2023 22:20:20 GMT", 420.0),
    ("Tue, 14 Nov 2023 22:20:20 -0000", 420.0),
    ("Tue, 14 Nov 2023 21:00:00 GMT", 0.0),
    ("soon", None),
    ("", None),
    ("-5", None),
    ("1.5", None),
    ("\u00b2", None),
])
def test_retry_after(header: str | None, seconds: float | None) -> None:
    # NOW is Tue, 14 Nov 2023 22:13:20 GMT.
    assert retry_after_seconds(header, NOW) == seconds
