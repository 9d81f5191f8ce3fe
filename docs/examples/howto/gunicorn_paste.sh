gunicorn --paste example.ini -k ouistiti_gw.worker.GatewayWorker -b 127.0.0.1:8080
