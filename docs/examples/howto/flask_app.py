# docs-test: skip: needs Flask, which is no dependency of ouistiti-gw (wrap_app.py runs the same wrapping)
from flask import Flask

from ouistiti_gw import WebSocketGateway

app = Flask(__name__)


@app.route("/")
def index():
    return "Flask answers every request that is not a WebSocket for a socket below docroot"


app.wsgi_app = WebSocketGateway(app.wsgi_app, docroot="/tmp/ws")   # app stays a Flask object
