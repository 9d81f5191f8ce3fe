# docs-test: skip: needs root and a running systemd
systemctl reload ouistiti-gw
