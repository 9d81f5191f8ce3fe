mkdir -p /tmp/hello-ws
python3 upper.py /tmp/hello-ws/upper &      # the UNIX server, in the background
ouistiti-gw serve hello.ini                 # the gateway and the page; Ctrl-C stops it
