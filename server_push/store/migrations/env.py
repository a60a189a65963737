"""Alembic environment: migrations run on the connection the server hands over
(``server_push.store.db.migrate``), never from a URL in a file."""

from alembic import context

from server_push.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through server_push.store.db.migrate")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
