ouistiti-gw serve --docroot /tmp/ws --port 8080 &
echo $! > gateway.pid          # the master's PID: the one to signal
