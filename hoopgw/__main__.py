"""``python -m hoopgw``: the same as the ``hoopgw`` command."""

from hoopgw.cli.main import main

raise SystemExit(main())
