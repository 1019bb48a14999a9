"""The server API over HTTP: ``POST /api/<method>`` on the admin listener.

Centrifugo v5's shape, so its clients (``cent``, ``phpcent``) work unchanged:
the key in ``X-API-Key: KEY`` or ``Authorization: apikey KEY`` (else 401,
nothing done), a JSON object as the body (else 400), and the answer
``{"result": ...}`` or ``{"error": {"code": ..., "message": ...}}`` with
HTTP 200. An unknown method is a 404. Every refusal is one log line.
"""

import hmac
import json
import logging

import gevent

from greenbridge.channels.api_methods import INTERNAL, ApiError, ServerApiMethods
from greenbridge.logs import RateLimitedLog

log = logging.getLogger("greenbridge.api")

PATH_PREFIX = "/api/"
# Above the largest publication: JSON escapes and base64 make the body larger than the data.
_BODY_OVERHEAD = 64 * 1024
# A caller that sends its headers but not its body cannot hold a greenlet for ever.
_BODY_TIMEOUT = 10.0


class ServerApi:
    """The WSGI application for ``/api/<method>``."""

    def __init__(self, broker, api_key, max_payload_size):
        self._key = api_key.encode("utf-8")
        self._methods = ServerApiMethods(broker, max_payload_size)
        self._max_body = 2 * max_payload_size + _BODY_OVERHEAD
        # Callers with a wrong key can make these lines as fast as they like.
        self._log_refusal = RateLimitedLog(log, logging.WARNING)

    def __call__(self, environ, start_response):
        name = environ.get("PATH_INFO", "")[len(PATH_PREFIX):]
        method = self._methods.by_name.get(name)
        if method is None:
            return _answer(start_response, "404 Not Found", b"no such API method\n")
        if environ.get("REQUEST_METHOD") != "POST":
            return _answer(start_response, "405 Method Not Allowed", b"POST only\n",
                           [("Allow", "POST")])
        if not self._authorized(environ):
            self._log_refusal("API %s from %s refused: missing or wrong API key", name,
                              environ.get("REMOTE_ADDR", "?"))
            return _answer(start_response, "401 Unauthorized", b"unauthorized\n")
        try:
            request = self._read_request(environ)
        except BadBody as refused:
            self._log_refusal("API %s: %s", name, refused.reason)
            return _answer(start_response, refused.status, (refused.reason + "\n").encode())
        try:
            answer = {"result": method(request)}
        except ApiError as error:
            # A broker that is down or too slow logs its loss once, not each refusal.
            if error.code != INTERNAL:
                log.info("API %s: error %d, %s", name, error.code, error.message)
            answer = _error(error.code, error.message)
        return _answer(start_response, "200 OK", json.dumps(answer).encode(),
                       [("Content-Type", "application/json")])

    def _authorized(self, environ):
        given = environ.get("HTTP_X_API_KEY")
        if given is None:
            scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            if scheme.lower() != "apikey":
                return False
        return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self._key)

    def _read_request(self, environ):
        """The body as a JSON object, else BadBody."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            raise BadBody("400 Bad Request", "bad Content-Length") from None
        if length > self._max_body:
            raise BadBody("413 Content Too Large", "body of %d bytes, more than the %d an "
                           "API request may have" % (length, self._max_body))
        try:
            with gevent.Timeout(_BODY_TIMEOUT):
                body = environ["wsgi.input"].read(self._max_body + 1 if length < 0 else length)
        except gevent.Timeout:
            raise BadBody("408 Request Timeout", "body not received within %gs"
                           % _BODY_TIMEOUT) from None
        if len(body) > self._max_body:
            raise BadBody("413 Content Too Large", "body larger than the %d bytes an API "
                           "request may have" % self._max_body)
        try:
            request = json.loads(body)
        except (ValueError, RecursionError) as error:
            raise BadBody("400 Bad Request", "body is not JSON: %s" % error) from None
        if not isinstance(request, dict):
            raise BadBody("400 Bad Request", "body must be a JSON object")
        return request


class BadBody(Exception):
    """A request body the API cannot read: HTTP `status`, one-line `reason`."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _error(code, message):
    return {"error": {"code": code, "message": message}}


def _answer(start_response, status, body, headers=()):
    headers = list(headers) or [("Content-Type", "text/plain; charset=utf-8")]
    start_response(status, headers + [("Content-Length", str(len(body))),
                                      ("Cache-Control", "no-store")])
    return [body]
