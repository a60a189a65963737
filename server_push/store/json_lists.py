"""Membership in a JSON list column (an agent's groups, an audit entry's
targets), answered by the database on SQLite and PostgreSQL alike.

Both keep the JSON text as written, ``["a", "b"]``; the values searched are
names (``topics.check_name``) that hold no quote or backslash, so ``"name"``
appears in the text exactly when the list holds it. instr and strpos
compare case-sensitively, as names do (SQLite's LIKE would not). No index
helps, but the scan costs milliseconds at 10,000 rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Text, cast, func


def as_text(column: Any) -> ColumnElement[str]:
    """The column's JSON text."""
    return cast(column, Text)


def holds(column: Any, name: str, dialect: str) -> ColumnElement[bool]:
    """Rows whose JSON list ``column`` holds the string ``name``."""
    finder = func.strpos if dialect == "postgresql" else func.instr
    return finder(as_text(column), f'"{name}"') > 0
