"""The HTTP surface: the app, the REST API, the agents' sync, enrolment and
WoL endpoints, the broker's auth hook, the HTTPS and front listeners, and the
console (``web.console``).

May import: ``server_push.services`` (the composition root it serves) and
every room below it. Nothing below imports this room.
"""
