"""epns.revocation: the revocation list file format and its lookups."""

from __future__ import annotations

import pytest

from epns.errors import ConfigError
from epns.revocation import RevocationList, parse_revocations


def test_empty() -> None:
    assert parse_revocations("") == RevocationList()
    assert parse_revocations("# only a comment\n\n   \n") == RevocationList()
    assert RevocationList().reason("agent-1", "ab", "t") is None


def test_parse_all_kinds() -> None:
    revoked = parse_revocations(
        """
        # header comment
        agent:laptop-0042        # this agent id
        serial:5F3A              # one certificate
        token:0c1d               # one token
        bare-agent
          AGENT : spaced-agent
        SERIAL:ABCDEF
        Token:MixedCaseJti
        """
    )
    assert revoked.agents == frozenset({"laptop-0042", "bare-agent", "spaced-agent"})
    assert revoked.serials == frozenset({"5f3a", "abcdef"})
    assert revoked.tokens == frozenset({"0c1d", "MixedCaseJti"})


def test_reason_by_agent() -> None:
    revoked = parse_revocations("agent:agent-1\n")
    assert revoked.reason("agent-1", None, None) == "agent:agent-1"
    assert revoked.reason("agent-1", "ff", "t") == "agent:agent-1"
    assert revoked.reason("agent-2", None, None) is None
    # agent ids are case sensitive, as topics are
    assert revoked.reason("AGENT-1", None, None) is None


def test_reason_by_serial_is_case_insensitive() -> None:
    revoked = parse_revocations("serial:5F3A\n")
    assert revoked.reason("agent-1", "5f3a", None) == "serial:5f3a"
    assert revoked.reason("agent-1", "5F3A", None) == "serial:5F3A"
    assert revoked.reason("agent-1", "5f3b", None) is None
    assert revoked.reason("agent-1", None, None) is None


def test_reason_by_token() -> None:
    revoked = parse_revocations("token:0c1d\n")
    assert revoked.reason("agent-1", None, "0c1d") == "token:0c1d"
    assert revoked.reason("agent-1", None, "0c1e") is None
    assert revoked.reason("agent-1", "0c1d", None) is None  # a serial is not a token id


def test_kinds_do_not_mix() -> None:
    revoked = parse_revocations("serial:abc\ntoken:def\n")
    assert revoked.reason("abc", None, None) is None
    assert revoked.reason("def", None, None) is None


def test_agent_reason_comes_first() -> None:
    revoked = parse_revocations("agent:a\nserial:1\ntoken:t\n")
    assert revoked.reason("a", "1", "t") == "agent:a"
    assert revoked.reason("b", "1", "t") == "serial:1"
    assert revoked.reason("b", "2", "t") == "token:t"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("cert:abc\n", 1),
        ("agent:\n", 1),
        ("agent:a\n\nserial:   # nothing\n", 3),
        ("# ok\nuser:bob\n", 2),
        (":abc\n", 1),
    ],
)
def test_bad_lines_name_the_line(text: str, line: int) -> None:
    with pytest.raises(ConfigError, match=rf"^revoked\.txt:{line}: expected agent:ID"):
        parse_revocations(text, source="revoked.txt")


def test_default_source_name() -> None:
    with pytest.raises(ConfigError, match=r"^revocation list:1:"):
        parse_revocations("bogus:1")
