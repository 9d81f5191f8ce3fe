# docs-test: skip: needs root and a running systemd (tests/system/test_systemd.py verifies the units and the ini)
cp contrib/systemd/ouistiti-gw.service 'contrib/systemd/ouistiti-gw-sample@.service' /etc/systemd/system/
install -d /etc/ouistiti-gw && cp contrib/systemd/gateway.ini /etc/ouistiti-gw/gateway.ini
echo 'OPTIONS=-w' > /etc/ouistiti-gw/sample-chat.env
systemctl daemon-reload
systemctl enable --now ouistiti-gw ouistiti-gw-sample@echo ouistiti-gw-sample@chat
