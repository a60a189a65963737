"""Who may do what, and how much: agent and API authentication, the
revocation list, the console's session secret, rate limits and sync
admission.

May import: ``store``. Not ``link``, ``fleet``, ``web`` or ``services``.
"""
