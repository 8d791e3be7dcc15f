"""SSH through hoopgw on Twisted Conch: see :mod:`hoopgw_ssh.protocol` and docs/protocols/ssh.md."""
