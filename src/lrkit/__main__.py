"""``python -m lrkit`` runs the ``lrkit`` command."""

from lrkit.cli import main

main()
