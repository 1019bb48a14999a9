"""What a PHP script asks of channels (framed-mode control frames), for its own connection.

The frames carry no client ID: a script subscribes and unsubscribes only the
connection it serves. Every request gets one reply, ok or refused with a
one-line reason; a refusal is also logged, at most once a second per
connection (a script retrying in a loop must not flood the log).
"""

import logging

from greenbridge import modes
from greenbridge.channels.broker import BrokerUnavailable
from greenbridge.channels.hub import SubscriptionError
from greenbridge.channel_names import ChannelNameError, check_channel
from greenbridge.channels.publication import PublicationError, checked_publication
from greenbridge.logs import RateLimitedLog, connection_fields

log = logging.getLogger("greenbridge.channels")


class PhpChannelRequests:
    """Carries out one connection's control frames: subscriptions on the hub, as its
    `subscriber`; publications through the broker."""

    def __init__(self, hub, broker, subscriber):
        self._hub = hub
        self._broker = broker  # publications reach every worker's (or node's) subscribers
        self._subscriber = subscriber
        self._log_refusal = None  # made at the first refusal: most connections have none

    def answer(self, request):
        """The reply frame for a modes.ControlRequest, once it is carried out (or refused)."""
        refusal = request.refusal
        if refusal is None:
            try:
                self._carry_out(request)
            except (ChannelNameError, SubscriptionError, PublicationError,
                    BrokerUnavailable) as error:
                refusal = str(error)
        if refusal is not None:
            self._refused(request.action, refusal)
        return modes.encode_reply(refusal)

    def _carry_out(self, request):
        channel = check_channel(request.channel)
        if request.action == modes.SUBSCRIBE:
            self._hub.subscribe(self._subscriber, channel)
        elif request.action == modes.UNSUBSCRIBE:
            self._hub.unsubscribe(self._subscriber, channel)
        else:
            self._broker.publish(checked_publication(channel, request.data, request.kind))

    def _refused(self, action, refusal):
        if self._log_refusal is None:
            self._log_refusal = RateLimitedLog(
                log, logging.INFO, extra=connection_fields(self._subscriber.client_id))
        self._log_refusal("PHP's %s refused: %s", action or "control frame", refusal)
