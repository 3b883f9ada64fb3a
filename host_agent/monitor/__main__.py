"""``python -m host_agent.monitor``: the monitor process (see host_agent.monitor.core)."""

import sys

from host_agent.monitor.core import main

sys.exit(main())
