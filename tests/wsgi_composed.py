"""A team's WSGI site with greenbridge mounted beside it (used by tests/test_wsgi.py)."""

import os

from greenbridge.wsgi import create_app, route_upgrades


def site(environ, start_response):
    body = b"plain site: " + environ.get("PATH_INFO", "").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def tag_requests(app):
    """Ordinary WSGI middleware: marks every request it passes on."""
    def middleware(environ, start_response):
        environ["HTTP_X_SEEN_BY_MIDDLEWARE"] = "yes"
        return app(environ, start_response)
    return middleware


bridge = create_app(os.environ["GREENBRIDGE_TEST_CONFIG"], max_connections=5)
application = tag_requests(route_upgrades(bridge, site, path_prefix="/ws"))
