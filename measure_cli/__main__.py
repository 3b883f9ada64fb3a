"""``python -m measure_cli``: the ``measure`` command."""

import sys

from measure_cli.cli import main

sys.exit(main())
