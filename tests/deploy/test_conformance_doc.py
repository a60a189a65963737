"""docs/conformance.md lists exactly the MQTT 3.1.1 statements that
tests/conformance checks, each in a row of its results table."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATEMENT = re.compile(r'"(MQTT-\d+\.\d+\.\d+-\d+)"')


def _checked() -> set[str]:
    return {match for path in (ROOT / "tests/conformance").glob("test_*.py")
            for match in STATEMENT.findall(path.read_text())}


def _rows() -> set[str]:
    text = (ROOT / "docs/conformance.md").read_text()
    return set(re.findall(r"^\| (MQTT-\d+\.\d+\.\d+-\d+) \|", text, re.MULTILINE))


def test_the_results_table_has_a_row_for_each_statement_checked() -> None:
    checked = _checked()
    assert len(checked) > 80
    assert sorted(checked - _rows()) == [], "run tests/conformance/table.py (docs/conformance.md)"
    assert sorted(_rows() - checked) == [], "docs/conformance.md lists statements not checked"
