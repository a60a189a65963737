"""``python -m server_push`` is ``epns-server``."""

import sys

from server_push.cli import main

sys.exit(main())
