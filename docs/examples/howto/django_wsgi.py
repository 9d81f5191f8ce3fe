# docs-test: skip: needs Django, which is no dependency of ouistiti-gw (wrap_app.py runs the same wrapping)
# mysite/wsgi.py
import os

from django.core.wsgi import get_wsgi_application

from ouistiti_gw import WebSocketGateway

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = WebSocketGateway(get_wsgi_application(), docroot="/tmp/ws")
