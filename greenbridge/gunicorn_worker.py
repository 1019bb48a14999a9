"""A gunicorn worker class that checks and admits WebSocket upgrades before answering 101.

    gunicorn -k greenbridge.gunicorn_worker.BridgeWorker -w 2 greenbridge.wsgi:application

gevent-websocket's own worker (GeventWebSocketWorker) answers 101 before
the application runs, so greenbridge can only refuse an upgrade there by
closing the fresh WebSocket (1013 when full). With this worker a full
server answers HTTP 503 and a malformed upgrade 400, as the standalone
server does. Everything else is gunicorn's gevent pywsgi worker.
"""

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler

from greenbridge.websocket import BridgeHandler


class _Handler(BridgeHandler, PyWSGIHandler):
    """greenbridge's upgrade handling with gunicorn's environ additions."""


class BridgeWorker(GeventPyWSGIWorker):
    wsgi_handler = _Handler
