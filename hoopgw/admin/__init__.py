"""The admin HTTP API: how people act on the gateway (reviews, just-in-time access).

:func:`~hoopgw.admin.api.build_site` makes the Twisted web site the gateway serves on
``[gateway] admin_listen``; :mod:`hoopgw.admin.openapi` is its OpenAPI document.
"""
