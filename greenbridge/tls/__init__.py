"""wss://: certificates (holder, self-signed), the pyOpenSSL context, handshakes, reload."""
