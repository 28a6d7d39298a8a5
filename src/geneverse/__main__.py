"""``python -m geneverse``: the ``geneverse`` command."""

from .cli import main

raise SystemExit(main())
