"""Channels kept by the bridge: a publication reaches every subscribed client's socket.

- ``publication.py``: one publication and its frames, built once per form;
- ``subscriber.py``: a connection's side (its bounded outgoing queue);
- ``hub.py``: the channels and subscribers of one process;
  ``membership.py`` holds a connection in it from start to teardown;
- ``broker.py``: what the API and PHP ask of all the channels, whichever
  process holds them (``LocalBroker``); ``workers.py`` relays between the
  workers of one host through the arbiter; ``redis_broker.py`` shares them
  between nodes through Redis (--broker), with ``redis_subscriptions.py``
  (the node's pub/sub connection), ``redis_publisher.py`` (publications,
  pipelined), ``redis_presence.py`` (its presence and ``info`` entries) and
  ``redis_keys.py`` (the keys, payloads and Lua);
- ``history.py``: the last publications of each channel, in memory (without
  ``--broker``); ``recovery.py``: a returning subscriber gets what it missed;
- ``api.py`` and ``api_methods.py``: the server API (Centrifugo's shape);
- ``tokens.py`` and ``token_verifier.py``: connection tokens (JWT).

Channel names are checked by ``greenbridge/channel_names.py``, a leaf that
PHP's control frames (modes.py) use too.
"""
