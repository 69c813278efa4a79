"""``python -m pipelines.predict``."""

import sys

from pipelines.predict.cli import main

sys.exit(main())
