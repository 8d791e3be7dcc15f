"""The config loader, the gateway's own (protocols see a connection as
:class:`hoopgw.connection.ConnectionConfig`).

- :mod:`~hoopgw.config.load`: :func:`~hoopgw.config.load.load_config`, the whole file;
- :mod:`~hoopgw.config.gateway`, :mod:`~hoopgw.config.connections`,
  :mod:`~hoopgw.config.identity`: one part of the file each;
- :mod:`~hoopgw.config.listeners`: listen addresses; :mod:`~hoopgw.config.tables`: typed
  access to a TOML table with errors that name the key.
"""
