"""``python -m nanomitter.cli``: the ``nanomitter`` command."""

from . import main

main()
