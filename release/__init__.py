"""The released artifacts, built from this checkout by ``scripts/build-packages``:
the ``epns-agent`` and ``epns-server`` wheels, the agent's ``.deb`` and its
single file. ``release/deb/`` holds the ``.deb``'s maintainer scripts."""
