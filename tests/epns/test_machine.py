"""The default agent id of a machine: its host name in the agent-id alphabet,
and the ids tried when another machine has that name."""

from __future__ import annotations

import hashlib

from epns import machine, topics


def test_a_host_name_becomes_an_agent_id() -> None:
    assert machine.agent_id_from_hostname("PC 17.corp.example") == "pc-17"
    assert machine.agent_id_from_hostname("web01") == "web01"
    assert machine.agent_id_from_hostname("--Büro_PC--") == "b-ro_pc"
    assert machine.agent_id_from_hostname("x" * 100) == "x" * 64
    for hopeless in ("", "...", "épée"[:1], "epns-server"):
        assert machine.agent_id_from_hostname(hopeless) == "agent"
    for name in ("PC 17.corp", "a" * 90, "-x-", "ÄÖÜ-1"):
        assert topics.is_valid_name(machine.agent_id_from_hostname(name))


def test_the_fingerprint_hides_the_machine_id_and_is_stable() -> None:
    raw = "0123456789abcdef0123456789abcdef"
    print_ = machine.fingerprint(raw + "\n")
    assert print_ == machine.fingerprint(raw)
    assert print_ is not None
    assert len(print_) == 64
    assert raw not in print_
    assert print_ != hashlib.sha256(raw.encode()).hexdigest()
    assert machine.fingerprint(" \n") is None


def test_candidates_try_the_name_then_a_suffix_of_the_machine_then_numbers() -> None:
    fp = "abcdef" + "0" * 58
    tried = list(machine.candidates("host", fp))
    assert tried[:3] == ["host", "host-abcdef", "host-abcdef-2"]
    assert tried[-1] == "host-abcdef-99"
    assert list(machine.candidates("host", None))[:3] == ["host", "host-2", "host-3"]
    long = list(machine.candidates("y" * 64, fp))
    assert all(len(name) <= 64 and topics.is_valid_name(name) for name in long)
    assert len(set(long)) == len(long)
