"""``python -m simctl``: the same as the ``simctl`` command."""

from simctl.cli import main

main()
