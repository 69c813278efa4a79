"""``python -m reports.architecture``: the architecture report (see :mod:`reports.architecture.cli`)."""

import sys

from reports.architecture.cli import main

sys.exit(main())
