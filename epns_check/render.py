"""The report for people (a rich table on a terminal, plain lines when piped)
and for tickets (JSON)."""

from __future__ import annotations

import json
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from epns_check.report import Report, Result, Status

_STYLES = {Status.PASS: "bold green", Status.WARN: "bold yellow", Status.FAIL: "bold red",
           Status.SKIP: "dim"}
_VERDICT_STYLES = {0: "bold green", 1: "bold yellow", 2: "bold red", 3: "bold red"}


def as_json(report: Report, **context: str) -> str:
    """The whole report as JSON; ``context`` (version, time) goes on top."""
    return json.dumps({**context, **report.to_dict()}, indent=2)


def plain(report: Report) -> str:
    """One line per result, its hint indented below; greppable."""
    lines = [report.title, *(f"note: {note}" for note in report.notes), ""]
    for result in report.ordered():
        lines.append(f"[{result.status.value}] {result.step.number:>2} {result.step.value:<11} "
                     f"{result.subject} ({result.seconds:.2f} s): {result.finding.detail}")
        if result.finding.hint:
            lines.append(f"{'':7}-> {result.finding.hint}")
    verdict = report.verdict
    lines += ["", f"verdict: {verdict.summary} (exit {verdict.exit_code})"]
    return "\n".join(lines) + "\n"


def table(report: Report, stream: TextIO) -> None:
    """A colour table on a terminal."""
    console = Console(file=stream)
    grid = Table(title=report.title, title_justify="left", expand=True)
    grid.add_column("#", justify="right", no_wrap=True)
    grid.add_column("step", no_wrap=True)
    grid.add_column("result", no_wrap=True)
    grid.add_column("time", justify="right", no_wrap=True)
    grid.add_column("subject", overflow="fold")
    grid.add_column("what was seen, and what to change", ratio=1)
    for result in report.ordered():
        grid.add_row(str(result.step.number), result.step.value,
                     Text(result.status.value, style=_STYLES[result.status]),
                     f"{result.seconds:.2f} s", result.subject, _detail(result))
    console.print(grid)
    for note in report.notes:
        console.print(Text(f"note: {note}", style="dim"))
    verdict = report.verdict
    console.print(Text(f"verdict: {verdict.summary} (exit {verdict.exit_code})",
                       style=_VERDICT_STYLES.get(verdict.exit_code, "bold")))


def _detail(result: Result) -> Text:
    text = Text(result.finding.detail)
    if result.finding.hint:
        text.append("\n-> " + result.finding.hint, style="cyan")
    return text
