"""``python -m adrank`` runs the CLI."""

import sys

from adrank.cli import main

sys.exit(main())
