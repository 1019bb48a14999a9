"""gevent.pywsgi's hook for a request it cannot read.

Checked against gevent 26.9.0. WSGIHandler.handle_one_request passes an error
of read_request to the private (gevent calls it experimental)
``_handle_client_error`` and sends the (status, whole response) it returns,
then closes; run_application calls it for a bad body and answers 400 itself.
gevent's own prints a traceback for some client errors.

Once a response is sent, WSGIHandler reads none of ``requestline`` (its log
line takes None), ``path``, ``headers`` (the parsed header section) and
``response_headers`` (``forget_parsed_request``).
"""

from gevent.pywsgi import WSGIHandler

CHECKED_AGAINST = {"gevent": "26.9.0"}


class BadRequestAnswer(WSGIHandler):
    """A pywsgi handler whose subclass answers requests it cannot read."""

    def answer_bad_request(self, error):
        """Log `error` (the client's) and return (status, whole HTTP response as bytes)."""
        raise NotImplementedError

    def _handle_client_error(self, error):
        return self.answer_bad_request(error)


def forget_parsed_request(handler):
    """Let go of what `handler` parsed of its request and of its response's headers (sent)."""
    handler.requestline = handler.path = handler.headers = None
    handler.response_headers = []
