OUISTITI_GW_DOCROOT=/var/run/websocket OUISTITI_GW_PROXY_PROTOCOL=v2 OUISTITI_GW_TRUSTED_PROXIES=127.0.0.1 \
  gunicorn -w 4 -k ouistiti_gw.worker.GatewayWorker -b 127.0.0.1:8081 'ouistiti_gw:make_app()'
