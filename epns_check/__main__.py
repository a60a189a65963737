"""``python -m epns_check``."""

from epns_check.cli import main

raise SystemExit(main())
