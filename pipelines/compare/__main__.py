"""``python -m pipelines.compare``."""

import sys

from pipelines.compare.cli import main

sys.exit(main())
