"""The management server (``epns-server``), in rooms by concern.

    web/        the HTTP surface: app, REST API, sync/enrol/WoL endpoints, HTTPS
                and front listeners, the console (web/console/)
    services.py the composition root: builds every service, wires the link
    fleet/      agents, presence, wake-ups, tasks, WoL, enrolment, events, the bus
    link/       the broker link, the outbox of signed commands, the WoL sender,
                cluster notices, metrics
    security/   authentication, revocations, secrets, rate limits, sync admission
    store/      the database, migrations, models, history, settings, claims
    cli.py, fleet_cli.py, embedded.py, health_probe.py, certs_cli.py   the edges

Each room may import only the rooms below it in this list (import-linter's
layers contract in pyproject.toml); the edges import anything.
"""
