"""``python -m ryu_app``: the controller launcher (see ryu_app.launcher)."""

import sys

from ryu_app.launcher import main

sys.exit(main())
