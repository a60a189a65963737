"""``python -m agent_push`` runs ``epns-agent``."""

from agent_push.cli import main

raise SystemExit(main())
