"""Recovery: a subscriber that comes back with the last position it saw gets what it
missed, in order, before anything newer; or it is told that it cannot.

The flow works over any broker: the channel's publications are held aside in
the Subscriber, it is subscribed, the broker's live stream is waited for
(``broker.live``), then the history since the position is read. What the
history holds is delivered first, then the held publications that come after
it, then live ones: none lost between the history read and the live stream,
none twice. Outcomes: recovered, or not with a reason (``EPOCH_CHANGED``,
``TRIMMED``, ``NO_HISTORY``...), said to the client explicitly.

The subscribe route asks for it with ``recover=<channel>:<offset>:<epoch>``
query parameters (``positions_asked``); PHP with its subscribe control frame.
"""

import json
import re
from urllib.parse import parse_qsl

from greenbridge.channels.broker import BrokerUnavailable, StreamPosition, UnrecoverablePosition
from greenbridge.channels.hub import SubscriptionError
from greenbridge.channels.tokens import shown
from greenbridge.frames import OPCODE_TEXT, encode_header

QUERY_PARAMETER = "recover"
EPOCH_CHANGED = "epoch changed"
TRIMMED = "history trimmed or expired"
NO_HISTORY = "no history kept"
AHEAD = "position ahead of the stream"
TOO_MUCH = "missed more than --subscriber-queue-size holds"
# <channel>:<offset>:<epoch>, split from the right (channel names may hold colons). An
# epoch is short (broker.new_epoch: 8 characters); 64 leaves room to spare.
_POSITION = re.compile(r"(.+):([0-9]{1,20}):([A-Za-z0-9_.-]{1,64})\Z", re.DOTALL)


class Outcome:
    """How a recovery went: `recovered`, the stream's `position` the client is now at (None
    without history) and, when not recovered, the `reason`."""

    __slots__ = ("recovered", "position", "reason")

    def __init__(self, recovered, position, reason=None):
        self.recovered = recovered
        self.position = position
        self.reason = reason

    def status(self, channel):
        """What the client is told, as JSON text: ``{"channel", "recovered", "offset",
        "epoch"}``, with ``"reason"`` when not recovered."""
        status = {"channel": channel, "recovered": self.recovered}
        if self.position is not None:
            status.update(offset=self.position.offset, epoch=self.position.epoch)
        if self.reason is not None:
            status["reason"] = self.reason
        return json.dumps(status, ensure_ascii=False)


class _StatusMessage:
    """The status as the first thing the subscriber gets for the channel (a text message,
    delivered as a publication is)."""

    __slots__ = ("_frame",)

    channel = None  # of no channel: never held

    def __init__(self, text):
        payload = text.encode("utf-8")
        self._frame = encode_header(OPCODE_TEXT, len(payload)) + payload

    def frame(self, envelope):
        return self._frame


def recover(hub, broker, subscriber, channel, since, tell_client):
    """Subscribe `subscriber` to `channel` and deliver what it missed after `since` (a
    StreamPosition); the Outcome. With `tell_client`, the client first gets the status as a
    text message. SubscriptionError when the subscription is refused (or already made: what
    it got meanwhile cannot be told apart from what it missed)."""
    if channel in hub.channels_of(subscriber):
        raise SubscriptionError("already subscribed to %s; recovery needs a new subscription"
                                % channel)
    subscriber.hold(channel)
    try:
        hub.subscribe(subscriber, channel)
    except BaseException:
        subscriber.resume(channel, (), None)
        raise
    outcome, missed = _missed(broker, subscriber, channel, since)
    first = [_StatusMessage(outcome.status(channel))] if tell_client else []
    subscriber.resume(channel, first + missed, outcome.position)
    return outcome


def _missed(broker, subscriber, channel, since):
    """(Outcome, the publications to deliver before the held ones)."""
    if not broker.keeps_history:
        return Outcome(False, None, NO_HISTORY), []
    try:
        broker.live(channel)
        try:
            page = broker.history(channel, -1, since)
        except UnrecoverablePosition:
            return Outcome(False, broker.history(channel, 0).position, EPOCH_CHANGED), []
    except BrokerUnavailable as error:
        return Outcome(False, None, str(error)), []
    position, publications = page.position, page.publications
    if since.offset > position.offset:
        return Outcome(False, position, AHEAD), []
    if since.offset < position.offset and \
            (not publications or publications[0].offset != since.offset + 1):
        return Outcome(False, position, TRIMMED), []
    if sum(len(each.frame(subscriber.envelope)) for each in publications) > subscriber.queue_limit:
        return Outcome(False, position, TOO_MUCH), []
    return Outcome(True, position), publications


class BadRecovery(ValueError):
    """A ``recover`` query parameter that cannot be honoured; the message is one line."""


def positions_asked(query, token_channels, envelope):
    """{channel: StreamPosition} of the query's ``recover=<channel>:<offset>:<epoch>``
    parameters (the channel may hold colons: split from the right); BadRecovery."""
    asked = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != QUERY_PARAMETER:
            continue
        if not envelope:
            raise BadRecovery("recover needs a subscribe route with envelope: plain messages "
                              "carry no offsets")
        position = _POSITION.match(value)
        if position is None:
            raise BadRecovery("recover=%s: not <channel>:<offset>:<epoch>" % shown(value))
        channel, offset, epoch = position.groups()
        if channel not in token_channels:
            raise BadRecovery("recover=%s: not a channel of the token" % shown(value))
        if channel in asked:
            raise BadRecovery("recover=%s: the channel is given twice" % shown(value))
        asked[channel] = StreamPosition(int(offset), epoch)
    return asked
