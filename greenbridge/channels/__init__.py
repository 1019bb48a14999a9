"""Channels kept by the bridge: a publication reaches every subscribed client's socket.

``names.py`` checks channel names; ``publication.py`` is one publication and
the frames built from it, once each; ``subscriber.py`` is a connection's side
(its bounded outgoing queue); ``hub.py`` is the registry of channels and
subscribers of one process.
"""
