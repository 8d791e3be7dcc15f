"""MySQL and MariaDB wire protocol for hoopgw: sans-io codec, client session, upstream login
and the MySQL statement dialect."""
