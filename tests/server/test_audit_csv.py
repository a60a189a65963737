"""The audit export read by a spreadsheet: a cell an installer or an agent
could choose (a host name in an outcome, say) must not run as a formula."""

from __future__ import annotations

import csv
import io

from server_push.store.audit_log import as_csv


def _rows(entries: list[dict[str, object]]) -> list[list[str]]:
    return list(csv.reader(io.StringIO(as_csv(entries))))[1:]


def test_cells_that_a_spreadsheet_would_run_are_quoted() -> None:
    hostile = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    rows = _rows([{"at": 1.5, "actor": text, "action": text, "targets": ["a"],
                   "outcome": text, "ref": text} for text in hostile])
    for text, row in zip(hostile, rows, strict=True):
        assert row[0] == "1.5"
        assert row[1:3] == ["'" + text, "'" + text]
        assert row[3] == '["a"]'
        assert row[4:] == ["'" + text, "'" + text]


def test_ordinary_cells_are_written_as_they_are() -> None:
    rows = _rows([{"at": 2.0, "actor": "token:my-rmm", "action": "wake", "targets": [],
                   "outcome": "3 agents, groups: a=b", "ref": None}])
    assert rows == [["2.0", "token:my-rmm", "wake", "[]", "3 agents, groups: a=b", ""]]
