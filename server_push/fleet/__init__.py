"""Fleet state and the wake-up contract: agents, presence (registry),
wake-ups, tasks, Wake-on-LAN dispatch, enrolment, the events agents send,
notifications, and the in-process bus the console listens to.

May import: ``link``, ``security``, ``store``. Not ``web`` or ``services``.
"""
