"""``python -m driftline``: the ``driftline`` command (used by ``driftline run --processes``)."""

import sys

from driftline.cli import main

sys.exit(main())
