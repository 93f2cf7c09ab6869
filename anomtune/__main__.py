"""``python -m anomtune``: the command line."""

from anomtune.cli import main

main()
