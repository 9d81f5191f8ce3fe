"""What runs the gateway: the pywsgi handler that answers before the 101, TLS, the WSGI server,
the gunicorn worker, PasteDeploy, the ini-file check."""
