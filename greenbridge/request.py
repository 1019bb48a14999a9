"""What the bridge believes about an upgrade request, read once from the WSGI environ.

The client's and the server's addresses come from the socket, or from
``X-Real-IP`` / ``X-Forwarded-*`` only when the peer is a --trusted-proxy;
path, query and headers become text; on wss:// the client's certificate is
read (tls/layer.py); admission adds the verified connection token
(channels/tokens.py). The per-address limit, the origin check, routing and
PHP's environment (php_environment.py) all use this one ``Request``.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional

from greenbridge.upgrade import Rejected

if TYPE_CHECKING:
    from greenbridge.channels.tokens import ConnectionToken
    from greenbridge.tls.layer import ClientCertificate


@dataclass(frozen=True, slots=True)  # one per connection, kept for its life
class Request:
    """What PHP is told about the WebSocket request, and what the origin check needs."""
    client_ip: str
    client_port: int
    server_host: str
    server_port: int
    uri: str
    path: str
    query: str
    headers: Dict[str, str]
    tls: bool  # wss://, or TLS ended by the WSGI server
    client_certificate: Optional["ClientCertificate"]  # when the client presented one
    # For the origin check: the host (port included) and scheme the client addressed.
    # The scheme is known only from a trusted proxy (X-Forwarded-Proto), else None.
    addressed_host: str
    addressed_scheme: Optional[str]
    # The connection token, once admission verified it (channels/tokens.py); None: no token.
    token: Optional["ConnectionToken"] = None


def capture_request(environ, is_trusted_proxy):
    """Build a Request from the WSGI environ; Rejected (400) if PHP could not be given it.

    `is_trusted_proxy(address)` tells whether a peer's forwarded headers are believed.
    """
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            name = key.replace("_", "-").lower()
        else:
            continue
        headers[name] = _header_text(name, value)
    path = _header_text("request path", environ.get("PATH_INFO", "") or "/")
    query = _header_text("query string", environ.get("QUERY_STRING", ""))
    local_host, local_port = environ.get("greenbridge.local_address") or (
        environ.get("SERVER_NAME", ""), environ.get("SERVER_PORT", "0"))
    client_ip, client_port = environ.get("REMOTE_ADDR", ""), int(environ.get("REMOTE_PORT") or 0)
    server_host, server_port = local_host, int(local_port)
    addressed_host, addressed_scheme = headers.get("host", ""), None
    if is_trusted_proxy(client_ip):
        forwarded_ip = _forwarded_client_ip(headers, is_trusted_proxy)
        if forwarded_ip:
            # The proxy's own port says nothing about the client's.
            client_ip, client_port = forwarded_ip, 0
        server_host, server_port = _forwarded_server(headers, server_host, server_port)
        addressed_host = _first_forwarded(headers, "x-forwarded-host") or addressed_host
        addressed_scheme = _first_forwarded(headers, "x-forwarded-proto").lower() or None
    tls, client_certificate = _tls(environ)
    return Request(
        client_ip=client_ip,
        client_port=client_port,
        server_host=server_host,
        server_port=server_port,
        uri=path + ("?" + query if query else ""),
        path=path,
        query=query,
        headers=headers,
        tls=tls,
        client_certificate=client_certificate,
        addressed_host=addressed_host,
        addressed_scheme=addressed_scheme,
    )


def _tls(environ):
    """(whether the request came over TLS, the client's certificate or None)."""
    connection = environ.get("greenbridge.tls")  # greenbridge's own wss:// listener
    if connection is not None:
        # Loaded already on wss:// (server.tls_layer); ws:// never loads it.
        from greenbridge.tls.layer import UnreadableClientCertificate, read_client_certificate
        try:
            return True, read_client_certificate(connection)
        except UnreadableClientCertificate as error:
            raise Rejected("400 Bad Request", "unreadable client certificate (%s)"
                           % error) from None
    # TLS ended by the WSGI server (gunicorn): no certificate to tell.
    return environ.get("wsgi.url_scheme") == "https", None


def _forwarded_client_ip(headers, is_trusted_proxy):
    """X-Real-IP, else the right-most X-Forwarded-For entry that is not a trusted proxy."""
    real_ip = headers.get("x-real-ip", "").strip()
    if real_ip:
        return real_ip
    hops = [hop.strip() for hop in headers.get("x-forwarded-for", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted_proxy(hop):
            return hop
    return hops[0] if hops else ""


def _first_forwarded(headers, name):
    """The first entry of an X-Forwarded-* header: what the client-facing proxy saw ("": none)."""
    return headers.get(name, "").split(",")[0].strip()


def _forwarded_server(headers, host, port):
    """Host and port the client asked for, from X-Forwarded-Host / X-Forwarded-Port."""
    forwarded_host = _first_forwarded(headers, "x-forwarded-host")
    if forwarded_host:
        host = forwarded_host
        name, colon, port_text = forwarded_host.rpartition(":")
        if colon and port_text.isdigit() and not name.endswith(":"):
            host, port = name.strip("[]"), int(port_text)
    port_text = _first_forwarded(headers, "x-forwarded-port")
    if port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    return host, port


def _header_text(name, value):
    # WSGI hands over the raw bytes as latin-1 text. Clients that send UTF-8
    # get it back as UTF-8; anything else stays latin-1, as HTTP defines it.
    if "\x00" in value:
        raise Rejected("400 Bad Request", "NUL byte in %s" % name)
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value
