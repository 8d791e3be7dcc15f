"""The gateway at run time: the reactor's listeners (gateway), the plugin chain, the live sessions,
login back-off, logging."""
