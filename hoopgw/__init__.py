"""hoopgw: a Layer-7 access gateway.

The gateway stands between callers (AI agents, scripts, people) and the systems they reach. It
holds the target's credential, records every command, and hands each command to a chain of
plugins that may block it, hold it for approval, or transform what flows back.
"""

__version__ = "0.1.0"
