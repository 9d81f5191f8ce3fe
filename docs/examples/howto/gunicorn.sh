OUISTITI_GW_DOCROOT=/tmp/ws gunicorn -k ouistiti_gw.worker.GatewayWorker -b 127.0.0.1:8080 'ouistiti_gw:make_app()'
