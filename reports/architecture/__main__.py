"""``python -m reports.architecture``: the architecture report (see :mod:`reports.architecture.report`)."""

import sys

from reports.architecture.report import main

sys.exit(main())
