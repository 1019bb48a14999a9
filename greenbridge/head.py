"""HEAD requests: the GET answer's status and headers, without its body.

gevent's WSGI server sends whatever body the application returns, HEAD or
not; a keep-alive client or a proxy then reads that body as the start of the
next answer. Every greenbridge listener serves its application through
``without_body_for_head`` instead of each answer checking the method itself.
"""

import inspect


def without_body_for_head(application):
    """`application`, answering HEAD with GET's status and headers, Content-Length included."""
    if not inspect.isfunction(application):
        # Calling an object nests an interpreter loop in C, whose stack every idle
        # connection's greenlet keeps saved (0.75 KiB); calling its bound method does not.
        application = application.__call__
    def serve(environ, start_response):
        if environ.get("REQUEST_METHOD") != "HEAD":
            return application(environ, start_response)
        return _answer_head(application, environ, start_response)

    return serve


def _answer_head(application, environ, start_response):
    started = []
    length = 0

    def hold_back(status, headers, exc_info=None):
        started[:] = [status, headers, exc_info]
        return count  # the WSGI write() callable

    def count(data):
        nonlocal length
        length += len(data)

    body = application(environ, hold_back)
    try:
        for chunk in body:
            count(chunk)
    finally:
        if hasattr(body, "close"):
            body.close()
    status, headers, exc_info = started
    if not any(name.lower() == "content-length" for name, _ in headers):
        headers = headers + [("Content-Length", str(length))]
    start_response(status, headers, exc_info)
    return []
