kill -HUP "$(cat gateway.pid)"     # a new worker takes every session over
