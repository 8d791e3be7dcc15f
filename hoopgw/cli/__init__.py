"""The ``hoopgw`` command line (:mod:`hoopgw.cli.main`): one module per command group, each with
a ``register(...)`` function; :mod:`~hoopgw.cli.common` holds what they share and
:mod:`~hoopgw.cli.api` the admin API client."""
