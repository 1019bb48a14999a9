"""gevent-websocket's classes, as greenbridge builds on them beyond their public use.

Checked against gevent-websocket 0.10.1:
- WebSocket is subclassed (websocket.BridgeWebSocket): its __init__(environ,
  stream, handler), its __slots__ (the subclass adds its own) and ``closed``;
  its __del__ would send a close frame from the garbage collector.
- Stream(handler) wraps the handler's rfile and socket; the stock WebSocket
  keeps it (``stream``, ``raw_read``, ``raw_write``) and a Utf8Validator,
  which greenbridge's class never uses: ``forget_stream`` lets them go, as
  the stock ``close`` does.
- WebSocketHandler.run_application answers 101 before the application runs:
  UpgradeLaterHandler runs the application as gevent.pywsgi's handler does
  (run_plain_application) and the application upgrades if it admits.
- A WebSocket the stock handler upgraded (gunicorn's GeventWebSocketWorker)
  is taken over through its environ, stream and handler; marking it
  ``closed`` keeps WebSocketHandler.run_websocket from sending a second
  close frame.
"""

from gevent.pywsgi import WSGIHandler
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Stream, WebSocket

from greenbridge.adapters.gevent_pywsgi import BadRequestAnswer

CHECKED_AGAINST = {"gevent-websocket": "0.10.1"}

__all__ = ("Stream", "UpgradeLaterHandler", "WebSocket", "forget_stream", "retire")


def retire(stock_websocket):
    """Mark a WebSocket the stock handler upgraded closed: greenbridge's own took it over."""
    stock_websocket.closed = True


def forget_stream(websocket):
    """Let go of the stock WebSocket's reading and writing parts (see the module docstring)."""
    websocket.stream = websocket.raw_read = websocket.raw_write = None
    websocket.utf8validator = None


class UpgradeLaterHandler(BadRequestAnswer, WebSocketHandler):
    """gevent-websocket's handler, without its own upgrade."""

    def run_plain_application(self):
        WSGIHandler.run_application(self)
