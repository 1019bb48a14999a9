"""gevent.pywsgi's hook for a request it cannot read.

Checked against gevent 26.9.0. WSGIHandler.handle_one_request passes an error
of read_request to the private (gevent calls it experimental)
``_handle_client_error`` and sends the (status, whole response) it returns,
then closes; run_application calls it for a bad body and answers 400 itself.
gevent's own prints a traceback for some client errors.

BaseServer.do_handle spawns each connection's greenlet on
``_handle_and_close_when_done(handle, close, args)``, whose ``handle(*args)``
nests a second interpreter loop in C: its stack stays saved with every parked
connection. ``HandleInOneLoop`` spawns (through the server's ``_spawn``) a
function that calls ``handle(sock, address)`` directly, then ``do_close``.

Once a response is sent, WSGIHandler reads none of ``requestline`` (its log
line takes None), ``path``, ``headers`` (the parsed header section) and
``response_headers``, of ``rfile`` only ``closed``, and its Input
(``wsgi_input``) reads nothing from its ``rfile`` at ``_discard`` when the
request had no body (``forget_parsed_request``).
"""

import io

from gevent.pywsgi import WSGIHandler, WSGIServer

CHECKED_AGAINST = {"gevent": "26.9.0"}

_CLOSED_READER = io.BytesIO()
_CLOSED_READER.close()


class BadRequestAnswer(WSGIHandler):
    """A pywsgi handler whose subclass answers requests it cannot read."""

    def answer_bad_request(self, error):
        """Log `error` (the client's) and return (status, whole HTTP response as bytes)."""
        raise NotImplementedError

    def _handle_client_error(self, error):
        return self.answer_bad_request(error)


def forget_parsed_request(handler):
    """Let go of what `handler` parsed of its request and of its response's headers (sent),
    and of its reader, which the caller closed."""
    handler.requestline = handler.path = handler.headers = None
    handler.response_headers = []
    handler.rfile = _CLOSED_READER
    body = handler.wsgi_input
    if not (body.content_length or body.chunked_input):
        body.rfile = None


class HandleInOneLoop(WSGIServer):
    """A WSGIServer whose connection greenlets keep 0.75 KiB less C stack (see the docstring)."""

    def do_handle(self, sock, address):
        spawn = self._spawn
        if spawn is None:  # handled in the accepting greenlet: nothing kept
            return super().do_handle(sock, address)
        try:
            spawn(self._handle_and_close, sock, address)
        except BaseException:
            self.do_close(sock, address)
            raise

    def _handle_and_close(self, sock, address):
        try:
            self.handle(sock, address)
        finally:
            self.do_close(sock, address)
