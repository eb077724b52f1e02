"""``python -m wmtui``: the same entry point as the ``wmtui`` console script."""

from wmtui.cli import main

main()
