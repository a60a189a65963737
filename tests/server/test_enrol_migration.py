"""Migration 0005 on a database made by revision 0004: the one-time tokens of
before keep working (an unused one enrols once, a used one lists its agent
and enrols no one), and the schema it makes is the one the models describe."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from epns import pki
from server_push.store.db import MIGRATIONS
from server_push.store.models import Base
from tests.server.conftest import Stack
from tests.support.server import start_server

UNUSED = "epnsenrol_made-before-0005-unused"
USED = "epnsenrol_made-before-0005-used"


def _upgrade(url: str, revision: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def _database_at_0004(path: Path) -> None:
    url = f"sqlite:///{path}"
    _upgrade(url, "0004")
    now = time.time()
    engine = create_engine(url)
    with engine.begin() as db:
        for name, token, used in (("unused", UNUSED, None), ("used", USED, now - 60)):
            db.execute(text(
                "INSERT INTO enrol_tokens (id, token_hash, groups, created_at, created_by, "
                "expires_at, used_at, agent_id) VALUES (:id, :hash, '[\"old\"]', :now, 'cli', "
                ":expires, :used, :agent)"),
                {"id": f"tok{name}", "hash": hashlib.sha256(token.encode()).hexdigest(),
                 "now": now - 120, "expires": now + 3600, "used": used,
                 "agent": "old-1" if used else None})
    engine.dispose()


def _enrol(stack: Stack, token: str, agent_id: str) -> Any:
    csr = pki.create_agent_csr(agent_id)[1].decode()
    with stack.server.client() as client:
        return client.post("/api/v1/enrol", json={"token": token, "agent_id": agent_id,
                                                  "csr": csr})


def test_tokens_made_before_keep_working_after_the_upgrade(stack: Stack) -> None:
    port = int(stack.server.url.rsplit(":", 1)[1])
    stack.server.stop()
    database = stack.work / "server.db"
    database.unlink()
    _database_at_0004(database)
    # The server migrates the 0004 database to the newest revision at start.
    stack.server = start_server(stack.pki, stack.work, stack.broker.port, http_port=port)
    stack.token = stack.server.api_token()
    with stack.api() as api:
        tokens = {t["id"]: t for t in api.get("/api/v1/enrol-tokens").json()}
        used = api.get("/api/v1/enrol-tokens/tokused").json()
    assert {k: (t["max_uses"], t["uses"], t["state"], t["approval"])
            for k, t in tokens.items()} == {"tokunused": (1, 0, "active", False),
                                            "tokused": (1, 1, "used", False)}
    assert [(e["agent_id"], e["state"]) for e in used["enrolments"]] == [("old-1", "enrolled")]
    refused = _enrol(stack, USED, "old-2")
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "enrol_token_used")
    first = _enrol(stack, UNUSED, "new-1")
    assert first.status_code == 201, first.text
    second = _enrol(stack, UNUSED, "new-2")
    assert (second.status_code, second.json()["error"]["code"]) == (401, "enrol_token_used")
    with stack.api() as api:
        assert api.get("/api/v1/agents/new-1").json()["groups"] == ["old"]


def test_the_migrated_schema_is_what_the_models_say(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    _upgrade(url, "head")
    engine = create_engine(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    mine = [d for d in differences
            if "enrol" in repr(d) or "'machine'" in repr(d) or "ix_agents_machine" in repr(d)]
    assert mine == []
