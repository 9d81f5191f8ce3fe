websocket_echo -R /tmp/ouistiti-gw -n echo &       # ws://127.0.0.1:8080/echo
ouistiti-gw serve example.ini
