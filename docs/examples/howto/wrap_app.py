"""Any WSGI application, wrapped: WebSocket requests for /NAME go to DOCROOT/NAME, the rest to it."""
from ouistiti_gw import WebSocketGateway


def application(environ, start_response):     # your app: Flask's app.wsgi_app, Django's application...
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the wrapped app answers every other request\n"]


application = WebSocketGateway(application, docroot="/tmp/ws", allow="*", deny="internal/*")
