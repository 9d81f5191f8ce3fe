python3 direct_echo.py /tmp/ws/echo &
ouistiti-gw serve --docroot /tmp/ws --port 8080 --mode direct
