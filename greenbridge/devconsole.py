"""--dev-console: a self-contained browser page to try the server by hand.

Like websocketd's dev console: connect to any path of this server, send
text or binary, see what comes back with timestamps and close codes. Served
for plain GET requests on the WebSocket port; it needs nothing from outside
(no CDN), so it works on a closed network.
"""

from importlib import resources

_PAGE = resources.files("greenbridge").joinpath("static/devconsole.html").read_bytes()


def serve_page(environ, start_response):
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"),
                                                  ("Content-Type", "text/plain")])
        return [b"GET only\n"]
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(_PAGE))),
                              ("Cache-Control", "no-store")])
    return [_PAGE]
