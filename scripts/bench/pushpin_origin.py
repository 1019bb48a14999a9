"""The origin behind Pushpin in bench.py's fan-out scenario: the smallest backend.

    python scripts/bench/pushpin_origin.py PORT CHANNEL

Pushpin turns each client's WebSocket into WebSocket-over-HTTP requests to
this origin; it answers the opening with the GRIP extension and one control
message that subscribes the connection to CHANNEL. Publications then go to
Pushpin's publish API, never through here.
"""

import json
import sys

from gevent.pywsgi import WSGIServer

EVENTS = "application/websocket-events"


def event(name, content=None):
    if content is None:
        return b"%s\r\n" % name
    return b"%s %x\r\n%s\r\n" % (name, len(content), content)


def origin(channel):
    subscribe = b"c:" + json.dumps({"type": "subscribe", "channel": channel}).encode()

    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        headers = [("Content-Type", EVENTS)]
        if body.startswith(b"OPEN"):
            answer = event(b"OPEN") + event(b"TEXT", subscribe)
            headers.append(("Sec-WebSocket-Extensions", "grip"))
        elif body.startswith(b"CLOSE"):
            answer = body  # the close handshake: the client's close echoed
        else:
            answer = b""
        start_response("200 OK", headers + [("Content-Length", str(len(answer)))])
        return [answer]
    return app


if __name__ == "__main__":
    WSGIServer(("127.0.0.1", int(sys.argv[1])), origin(sys.argv[2]), log=None).serve_forever()
