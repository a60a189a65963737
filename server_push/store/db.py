"""The database: an async engine, sessions, and schema migrations at start.

SQLite (aiosqlite) is the embedded default; PostgreSQL (asyncpg) takes only a
different URL. The schema is brought to the newest Alembic revision when the
server starts, so an upgrade of the product upgrades its database.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from epns.errors import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x65706E73 + 1  # next to the cluster's election lock


def create_engine(url: str) -> AsyncEngine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so the API and
    the MQTT consumer can write at the same time without 'database is locked'."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def sessions(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    """The session factory every store function takes."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Replicas starting together on one database: one migrates, the
        # others wait for its commit and find the schema current.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    current = MigrationContext.configure(connection).get_current_revision()
    known = schema_revisions()
    if current is not None and current not in known:
        # A newer epns migrated it (an upgrade rolled back without its backup).
        raise StoreError(f"the database is at schema revision {current}, newer than this "
                         f"epns knows (up to {known[-1]}): run the version that migrated it, "
                         "or restore the backup taken before the upgrade (docs/upgrade.md)")
    command.upgrade(_alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; a StoreError says why it could not."""
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"cannot migrate the database {engine.url!r}: {exc}") from exc


def schema_revisions() -> tuple[str, ...]:
    """The revisions this code knows, oldest first (the chain is linear)."""
    script = ScriptDirectory.from_config(_alembic_config())
    return tuple(reversed([item.revision for item in script.walk_revisions()]))
