websocket_jsonrpc -R /tmp/ws -n hello -L ./hello_rpc.py -C "Hello" &
ouistiti-gw serve --docroot /tmp/ws --port 8080
