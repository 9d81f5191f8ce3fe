# docs-test: skip: installs the project into a new virtualenv; the suite runs in the one .ci/run makes the same way
python3 -m venv .venv && .venv/bin/pip install -e .     # from a clone of the repository
. .venv/bin/activate                                     # ouistiti-gw, websocket_echo... on PATH
