"""The server API's methods, in the shape of Centrifugo v5's HTTP API.

Each method takes the request's JSON object and returns the ``result``
object, or raises ApiError with Centrifugo's code; ``api.py`` does the HTTP.
Field checks say which field is wrong and why, in one line.
"""

import base64
import binascii
import json

from greenbridge.channels.broker import BrokerUnavailable, StreamPosition, UnrecoverablePosition
from greenbridge.channels.hub import SubscriptionError
from greenbridge.channel_names import ChannelNameError, check_channel
from greenbridge.channels.publication import BINARY, JSON, Publication

# Centrifugo's error codes (https://centrifugal.dev/docs/server/codes).
INTERNAL = 100
UNKNOWN_CHANNEL = 102
METHOD_NOT_FOUND = 104
LIMIT_EXCEEDED = 106
BAD_REQUEST = 107
NOT_AVAILABLE = 108
UNRECOVERABLE_POSITION = 112

# The close code a disconnect sends unless the request names one.
DEFAULT_DISCONNECT = (1000, "disconnected by the server API")


class ApiError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def bad_request(message):
    return ApiError(BAD_REQUEST, "bad request: " + message)


def broker_unavailable(error):
    """The answer to a BrokerUnavailable: nothing was done, try again later."""
    return ApiError(INTERNAL, "internal server error: %s" % error)


class ServerApiMethods:
    def __init__(self, broker, max_payload_size):
        self._broker = broker
        self._max_payload_size = max_payload_size
        self.by_name = {name: _answering_broker_errors(method) for name, method in {
            "publish": self.publish, "broadcast": self.broadcast,
            "subscribe": self.subscribe, "unsubscribe": self.unsubscribe,
            "disconnect": self.disconnect, "presence": self.presence,
            "presence_stats": self.presence_stats, "channels": self.channels, "info": self.info,
            "history": self.history, "history_remove": self.history_remove,
        }.items()}

    # -- publishing --------------------------------------------------------

    def publish(self, request):
        position = self._broker.publish(self._publication(_channel(request), request))
        return {} if position is None else {"offset": position.offset, "epoch": position.epoch}

    def broadcast(self, request):
        channels = _field(request, "channels", list)
        if not channels:
            raise bad_request("channels must name at least one channel")
        publish = _answering_broker_errors(self.publish)  # one channel's failure is its own
        responses = []
        for channel in channels:
            try:
                responses.append({"result": publish(dict(request, channel=channel))})
            except ApiError as error:
                responses.append({"error": {"code": error.code, "message": error.message}})
        return {"responses": responses}

    def _publication(self, channel, request):
        if request.get("b64data") is not None:
            encoded = _field(request, "b64data", str)
            try:
                data, kind = base64.b64decode(encoded, validate=True), BINARY
            except (binascii.Error, ValueError):
                raise bad_request("b64data is not base64") from None
        elif "data" in request:
            data = json.dumps(request["data"], ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False).encode("utf-8")
            kind = JSON
        else:
            raise bad_request("data or b64data is required")
        if len(data) > self._max_payload_size:
            raise ApiError(LIMIT_EXCEEDED, "limit exceeded: %d bytes of data, more than "
                           "--max-payload-size %d" % (len(data), self._max_payload_size))
        return Publication(channel, data, kind)

    # -- a user's connections ---------------------------------------------

    def subscribe(self, request):
        channel = _channel(request)
        try:
            self._broker.subscribe(_field(request, "user", str), channel, _client(request))
        except SubscriptionError as error:
            raise ApiError(LIMIT_EXCEEDED, "limit exceeded: %s" % error) from None
        return {}

    def unsubscribe(self, request):
        self._broker.unsubscribe(_field(request, "user", str), _channel(request),
                                 _client(request))
        return {}

    def disconnect(self, request):
        code, reason = DEFAULT_DISCONNECT
        if request.get("disconnect") is not None:
            disconnect = _field(request, "disconnect", dict)
            code = _field(disconnect, "code", int, "disconnect.code", default=code)
            reason = _field(disconnect, "reason", str, "disconnect.reason", default=reason)
            if not (code == 1000 or 3000 <= code <= 4999):
                raise bad_request("disconnect.code must be 1000 or 3000-4999 (a WebSocket "
                                  "close code an application may send)")
            if len(reason.encode("utf-8")) > 123:
                raise bad_request("disconnect.reason is longer than a close frame holds "
                                  "(123 bytes)")
        keep = _field(request, "whitelist", list, default=[])
        self._broker.disconnect(_field(request, "user", str), _client(request),
                                frozenset(str(client_id) for client_id in keep), code, reason)
        return {}

    # -- what is there ------------------------------------------------------

    def presence(self, request):
        return {"presence": {entry["client"]: entry
                             for entry in self._broker.presence(_channel(request))}}

    def presence_stats(self, request):
        entries = self._broker.presence(_channel(request))
        return {"num_clients": len(entries),
                "num_users": len({entry["user"] for entry in entries})}

    def channels(self, request):
        pattern = _field(request, "pattern", str, default=None)
        return {"channels": {channel: {"num_clients": count}
                             for channel, count in self._broker.channels(pattern or None).items()}}

    def info(self, request):
        return {"nodes": self._broker.nodes()}

    # -- history -----------------------------------------------------------

    def history(self, request):
        channel = _channel(request)
        limit = _field(request, "limit", int, default=0)
        if limit < -1:
            raise bad_request("limit must be -1 (all), 0 (only the position) or more")
        reverse = _field(request, "reverse", bool, default=False)
        since = None
        if request.get("since") is not None:
            given = _field(request, "since", dict)
            since = StreamPosition(_field(given, "offset", int, "since.offset"),
                                   _field(given, "epoch", str, "since.epoch"))
            if since.offset < 0 or (reverse and since.offset == 0):
                raise bad_request("since.offset must be over 0 in reverse, 0 or more otherwise")
        self._check_history_kept()
        try:
            page = self._broker.history(channel, limit, since, reverse)
        except UnrecoverablePosition:
            raise ApiError(UNRECOVERABLE_POSITION, "unrecoverable position") from None
        return {"publications": [_history_entry(each) for each in page.publications],
                "offset": page.position.offset, "epoch": page.position.epoch}

    def history_remove(self, request):
        channel = _channel(request)
        self._check_history_kept()
        self._broker.history_remove(channel)
        return {}

    def _check_history_kept(self):
        if not self._broker.keeps_history:
            raise ApiError(NOT_AVAILABLE, "not available: no history is kept (--history-size)")


def _history_entry(publication):
    """A publication as ``history`` answers it: JSON as JSON, text as a string, bytes as
    base64."""
    if publication.kind == BINARY:
        entry = {"b64data": base64.b64encode(publication.data).decode("ascii")}
    elif publication.kind == JSON:
        entry = {"data": json.loads(publication.data)}
    else:
        entry = {"data": publication.data.decode("utf-8")}
    entry["offset"] = publication.offset
    return entry


def _answering_broker_errors(method):
    """`method`, with a broker that cannot do it now answered as Centrifugo's code 100."""
    def answering(request):
        try:
            return method(request)
        except BrokerUnavailable as error:
            raise broker_unavailable(error) from None
    answering.__name__ = method.__name__
    return answering


_MISSING = object()


def _field(request, name, kind, label=None, default=_MISSING):
    value = request.get(name, _MISSING)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise bad_request("%s is required" % (label or name))
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad_request("%s must be %s" % (label or name, _KIND_NAMES[kind]))
    return value


_KIND_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object",
               bool: "true or false"}


def _client(request):
    return _field(request, "client", str, default=None)


def _channel(request):
    try:
        return check_channel(_field(request, "channel", str))
    except ChannelNameError as error:
        raise ApiError(UNKNOWN_CHANNEL, "unknown channel: %s" % error) from None
