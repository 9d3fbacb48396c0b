"""``python -m driftline``: the ``driftline`` command (used by ``driftline run --processes``)."""

from driftline.cli import console_main

console_main()
