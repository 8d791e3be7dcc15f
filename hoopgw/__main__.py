"""``python -m hoopgw``: the same as the ``hoopgw`` command."""

from hoopgw.cli import main

raise SystemExit(main())
