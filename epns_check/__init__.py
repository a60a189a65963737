"""epns-check: a diagnostic that tells a support person what is wrong with an
agent's push connection, and what to change.

It tests the deployment over the network, as the agent would, and imports
none of ``broker``, ``agent_push`` and ``server_push`` (import-linter enforces
it): only the shared core, ``epns``.
"""
