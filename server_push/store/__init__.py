"""Storage: the database engine and migrations (Alembic, ``migrations/``),
the models, history lines, settings, and message claims.

Imports no other room.
"""
