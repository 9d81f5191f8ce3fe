ouistiti-gw serve --docroot /tmp/ws --port 8080 --admin-path /admin/sessions
