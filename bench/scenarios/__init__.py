"""The benchmark scenarios, one module each.

Commands of ``python -m bench``: ``hold``, ``one_port``, ``end_to_end``,
``agent_idle``, ``wake_agents``, ``sync_latency``, ``tls_memory`` and
``ssl_read_chunk`` (each with a ``main(argv, prog)``). Parts of the suite
(``python -m bench suite``) only: ``fleet`` (scenarios 1 to 4), ``storm`` (5)
and ``agent`` (7, ``agent_idle`` in the background); ``end_to_end`` is
scenario 6.
"""
