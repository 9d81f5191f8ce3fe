"""Moving live sessions to a new process on a reload: their state as data, the live-session
registry, the migration over a UNIX socket, the rendezvous under gunicorn, serve's supervisor."""
