"""The broker link and what leaves through it: the MQTT link, the outbox of
signed commands, the WoL packet sender, cluster notices between replicas,
and the link's metrics.

May import: ``security``, ``store``. Not ``fleet``, ``web`` or ``services``.
"""
