"""HTTP APIs through hoopgw (``protocol = "http"``); see ``docs/protocols/http.md``."""
