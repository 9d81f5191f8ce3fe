ouistiti-gw serve --docroot /var/run/websocket --port 8081 --proxy-protocol v2 --trusted-proxies 127.0.0.1 \
                  --allowed-hosts ws.example.com &
ouistiti-gw serve --docroot /var/run/websocket --port 8082 --proxy-protocol v2 --trusted-proxies 127.0.0.1 \
                  --allowed-hosts ws.example.com &
websocket_echo -R /var/run/websocket -n echo -P      # wss://HOST/echo
