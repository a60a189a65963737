"""``python -m broker`` runs ``epns-broker``."""

from broker.cli import main

raise SystemExit(main())
