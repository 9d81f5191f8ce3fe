mkdir -p /tmp/ws && websocket_echo -R /tmp/ws -n echo &            # ws://127.0.0.1:8080/echo
gunicorn -k ouistiti_gw.worker.GatewayWorker -b 127.0.0.1:8080 wrap_app:application
