"""The results table of docs/conformance.md, from a run's JUnit XML.

    .venv/bin/pytest tests/conformance -n 2 --junitxml=/tmp/conformance.xml
    .venv/bin/python -m tests.conformance.table /tmp/conformance.xml

One row per MQTT 3.1.1 statement: for each broker "pass" when every case
that checks it passed, else what its strict xfails say (the broker's name
and "issue 15" start their reasons).
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

BROKERS = ("epns", "mosquitto")


def statement_key(statement: str) -> tuple[int, ...]:
    """MQTT-3.1.2-24 sorts as (3, 1, 2, 24)."""
    return tuple(int(n) for n in re.findall(r"\d+", statement))


def results(junit: Path) -> dict[str, dict[str, set[str]]]:
    """statement -> broker -> the outcomes of its cases ("pass" or a reason)."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for case in ET.parse(junit).iter("testcase"):
        props = {p.get("name"): p.get("value", "") for p in case.iter("property")}
        broker = re.search(r"\[(epns|mosquitto)", case.get("name", ""))
        if "mqtt" not in props or broker is None:
            continue
        skipped, failed = case.find("skipped"), case.find("failure")
        if failed is not None or case.find("error") is not None:
            outcome = "FAIL"
        elif skipped is not None:
            outcome = skipped.get("message", "").removeprefix("xfail").strip(" :")
            outcome = outcome.split(": ", 1)[-1]  # the broker's name is the column
        else:
            outcome = "pass"
        for statement in props["mqtt"].split():
            found[statement][broker.group(1)].add(outcome)
    return found


def cell(outcomes: set[str]) -> str:
    """"pass", or what failed, after "partly:" when other cases passed."""
    if outcomes == {"pass"}:
        return "pass"
    failed = "; ".join(sorted(o for o in outcomes if o != "pass")).replace("|", "\\|")
    return f"partly: {failed}" if "pass" in outcomes else failed


def main(junit: str) -> None:
    found = results(Path(junit))
    print("| statement | epns | Mosquitto 2.0.11 |")
    print("|---|---|---|")
    for statement in sorted(found, key=statement_key):
        row = [cell(found[statement][broker]) for broker in BROKERS]
        print(f"| {statement} | {row[0]} | {row[1]} |")


if __name__ == "__main__":
    main(sys.argv[1])
