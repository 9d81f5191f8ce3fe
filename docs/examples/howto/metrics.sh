ouistiti-gw serve --docroot /tmp/ws --port 8080 --metrics-path /metrics
