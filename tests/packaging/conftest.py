"""The packaging tests run a whole stack (a real broker and server) for the
installed agents to connect and sync against: tests/server's fixture."""

from tests.server.conftest import make_stack  # noqa: F401 (a fixture, used by name)
