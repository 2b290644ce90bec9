"""What a request's server span says: its name and its HTTP semantic-convention attributes.

Built only for the spans that are recorded; a dropped request's span carries its ids and
nothing else. Method labels are bounded: a method the conventions do not know (clients
choose them) is ``_OTHER``, with the original cut to 64 characters.

``server.address``/``server.port`` name the host the client asked for (``Host``), not the
socket, so behind a load balancer spans do not all name the pod. ``Forwarded`` and
``X-Forwarded-Host``/``-Proto``/``-For`` are believed only when the immediate client is a
proxy the user trusts (:class:`TrustedProxies`): anyone else could send them.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar.types import Scope

    from litestar_omnii_obs._internal.scrubbing import SecretScrubber

__all__ = [
    "KNOWN_METHODS",
    "TrustedProxies",
    "check_trusted_proxies",
    "error_type",
    "method_label",
    "qualified_name",
    "server_span_attributes",
    "span_name",
]

#: The methods the HTTP semantic conventions know; any other (clients choose them) is ``_OTHER``.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_MAX_ORIGINAL_METHOD = 64
_SPAN_HEADERS = frozenset({b"host", b"user-agent", b"x-request-id"})
_FORWARDED_HEADERS = _SPAN_HEADERS | {b"forwarded", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-for"}
_JOINED = frozenset({b"forwarded", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-for"})
_SCHEMES = frozenset({"http", "https", "ws", "wss"})
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_MAX_HOST = 255 + 7  # a DNS name, a colon and a port
_REQUEST_ID_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"


def method_label(method: str) -> str:
    """``method`` if the semantic conventions know it, else ``_OTHER`` (a bounded label)."""
    return method if method in KNOWN_METHODS else "_OTHER"


def span_name(label: str, route: str | None) -> str:
    """``{method} {route template}``; ``HTTP`` for ``_OTHER``; the method alone when no route matched."""
    prefix = label if label != "_OTHER" else "HTTP"
    return f"{prefix} {route}" if route is not None else prefix


def server_span_attributes(
    scope: Scope, method: str, route: str | None, scrubber: SecretScrubber, proxies: TrustedProxies | None = None
) -> dict[str, Any]:
    """HTTP semantic-convention attributes of a server span; the query string scrubbed like Sentry's data.

    ``proxies``: whose forwarded headers are believed (none when ``None`` or empty).
    """
    raw_query: bytes = scope.get("query_string", b"")
    label = method_label(method)
    attributes: dict[str, Any] = {
        "http.request.method": label,
        "url.path": scope["path"],
        "url.scheme": scope["scheme"],
        "network.protocol.version": scope["http_version"],
    }
    if label != method:
        attributes["http.request.method_original"] = method[:_MAX_ORIGINAL_METHOD]
    if raw_query:
        _add_query(attributes, raw_query, scrubber)
    if route is not None:
        attributes["http.route"] = route
    client = scope.get("client")
    peer: str | None = client[0] if client else None
    if proxies is not None and proxies.enabled and proxies.trusts(peer):
        headers = _forwarding_headers(scope)
        _add_forwarded(attributes, headers, proxies)
    else:  # the usual case: no forwarding header is read
        headers = _span_headers(scope)
    if peer is not None:
        attributes.setdefault("client.address", peer)
    _add_server(attributes, scope, headers.get(b"host"))
    _add_headers(attributes, headers)
    return attributes


def _add_query(attributes: dict[str, Any], raw_query: bytes, scrubber: SecretScrubber) -> None:
    """``url.query``, its secrets scrubbed; nothing when scrubbing leaves it empty."""
    query = scrubber.scrub_query(raw_query.decode("latin-1"))
    if query:
        attributes["url.query"] = query


def _span_headers(scope: Scope) -> dict[bytes, str]:
    """The request headers the span reads when no trusted proxy forwarded the request."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _SPAN_HEADERS:
            found[name] = value.decode("latin-1")
    return found


def error_type(exc: BaseException | None, status: int) -> str | None:
    """``error.type`` as the semantic conventions define it for a server: ``None`` below 500.

    The exception's fully-qualified class name (as ``exception.type``: ``builtins`` left out), else
    the status code as a string.
    """
    if status < 500:
        return None
    return str(status) if exc is None else qualified_name(type(exc))


def qualified_name(kind: type) -> str:
    """``module.QualName``, or ``QualName`` for a built-in type: what ``exception.type`` carries."""
    module = kind.__module__
    return f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__


class TrustedProxies:
    """The immediate clients whose forwarded headers are believed (uvicorn's ``--forwarded-allow-ips``).

    From IP addresses, networks in CIDR notation, or ``*`` (any client). A client the list does not
    name could send any ``X-Forwarded-Host``; its headers are ignored.
    """

    __slots__ = ("any", "enabled", "networks")

    def __init__(self, entries: tuple[str, ...]) -> None:
        check_trusted_proxies(entries)
        self.any = "*" in entries
        self.networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries if e != "*")
        self.enabled = bool(entries)  # none trusted (the default): nothing to check on each span

    def trusts(self, address: str | None) -> bool:
        """Whether ``address`` (the ASGI scope's client) is a trusted proxy."""
        if self.any:
            return True
        if not self.networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # not an IP (a test client's name, a Unix socket)
            return False
        return any(ip in network for network in self.networks)


def check_trusted_proxies(entries: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the first entry that is neither ``*``, an IP address nor a CIDR network."""
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address, a CIDR network or '*'") from None


def _forwarding_headers(scope: Scope) -> dict[bytes, str]:
    """The request headers the span reads, forwarding ones included; a repeated one is joined with commas."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _FORWARDED_HEADERS:
            text = value.decode("latin-1")
            found[name] = f"{found[name]},{text}" if name in found and name in _JOINED else text
    return found


def _add_forwarded(attributes: dict[str, Any], headers: dict[bytes, str], proxies: TrustedProxies) -> None:
    """What a trusted proxy says of the original request: ``Forwarded`` first, then the ``X-Forwarded-*`` headers."""
    hops = _forwarded_hops(headers.get(b"forwarded", ""))
    first = hops[0] if hops else {}
    host = first.get("host") or _first(headers.get(b"x-forwarded-host"))
    if host:
        headers[b"host"] = host  # what server.address is read from
    proto = (first.get("proto") or _first(headers.get(b"x-forwarded-proto")) or "").lower()
    if proto in _SCHEMES:
        attributes["url.scheme"] = proto
    client = _original_client(_forwarded_chain(hops, headers), proxies)
    if client:
        attributes["client.address"] = client


def _forwarded_chain(hops: list[dict[str, str]], headers: dict[bytes, str]) -> list[str]:
    """The client and proxy addresses, original client first: ``Forwarded``'s ``for=``, else ``X-Forwarded-For``."""
    chain = [hop["for"] for hop in hops if hop.get("for")]
    if chain:
        return chain
    return [item.strip() for item in headers.get(b"x-forwarded-for", "").split(",") if item.strip()]


def _forwarded_hops(value: str) -> list[dict[str, str]]:
    """RFC 7239 ``Forwarded``: one dict per hop (``for``, ``host``, ``proto``...), quotes removed."""
    hops: list[dict[str, str]] = []
    for element in value.split(","):
        pairs: dict[str, str] = {}
        for pair in element.split(";"):
            key, sep, text = pair.partition("=")
            if sep:
                pairs[key.strip().lower()] = text.strip().strip('"')
        if pairs:
            hops.append(pairs)
    return hops


def _original_client(chain: list[str], proxies: TrustedProxies) -> str | None:
    """uvicorn's rule: from the nearest hop back, the first address that is not a trusted proxy (else the first)."""
    addresses = [_node_address(node) for node in chain]
    for address in reversed(addresses):
        if not proxies.trusts(address):
            return address or None
    return (addresses[0] or None) if addresses else None


def _node_address(node: str) -> str:
    """A ``Forwarded`` node or ``X-Forwarded-For`` item without its port: ``[2001:db8::1]:80`` -> ``2001:db8::1``."""
    if node.startswith("["):
        return node[1 : node.find("]")] if "]" in node else ""
    if node.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has more colons
        return node.partition(":")[0]
    return node


def _first(value: str | None) -> str | None:
    """The first of a comma-separated header's values (the original request's, in a proxy chain)."""
    return (value.split(",", 1)[0].strip() or None) if value else None


def _add_server(attributes: dict[str, Any], scope: Scope, host: str | None) -> None:
    """``server.address``/``server.port`` from ``Host`` (the scheme's port when it names none); else the socket."""
    parsed = None if not host else _split_host(host)
    if parsed is not None:
        attributes["server.address"], port = parsed
        attributes["server.port"] = port or _DEFAULT_PORTS.get(attributes["url.scheme"], 80)
        return
    server = scope.get("server")
    if server:
        attributes["server.address"] = server[0]
        if server[1] is not None:
            attributes["server.port"] = server[1]


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``example.com:8080`` -> (``example.com``, 8080); ``[::1]`` -> (``::1``, None); ``None`` if it is no host."""
    if not _is_host_text(value):
        return None
    if ":" not in value:  # the usual Host: a name, on the scheme's port
        return value, None
    if value[0] == "[":
        parts = _split_bracketed_host(value)
        if parts is None:
            return None
        name, port_text = parts
    else:
        name, _, port_text = value.partition(":")
    if not name or ":" in port_text:
        return None
    return name, _port_number(port_text)


def _is_host_text(value: str) -> bool:
    """Whether ``value`` could be a ``Host``: not empty, not too long, printable, no space."""
    return bool(value) and len(value) <= _MAX_HOST and value.isprintable() and " " not in value


def _split_bracketed_host(value: str) -> tuple[str, str] | None:
    """``[::1]:8080`` -> (``::1``, ``8080``); ``None`` when the bracket is not closed or not followed by ``:``."""
    end = value.find("]")
    if end < 0 or (len(value) > end + 1 and value[end + 1] != ":"):
        return None
    return value[1:end], value[end + 2 :]


def _port_number(text: str) -> int | None:
    """The port ``text`` names, ``None`` when it is empty or no valid TCP port.

    ``isdecimal``, not ``isdigit``: ``int`` refuses the superscript digits (``²``) a Latin-1 ``Host`` can carry.
    """
    port = int(text) if text.isdecimal() and len(text) <= 5 else None
    return port if port is not None and 0 < port < 65536 else None


def _add_headers(attributes: dict[str, Any], headers: dict[bytes, str]) -> None:
    """The user agent, and the caller's ``X-Request-ID`` when it looks like an id (nothing else is kept)."""
    if b"user-agent" in headers:
        attributes["user_agent.original"] = headers[b"user-agent"]
    caller_id = headers.get(b"x-request-id")
    if caller_id and len(caller_id) <= 128 and not caller_id.encode().translate(None, _REQUEST_ID_CHARS):
        attributes["http.request.header.x-request-id"] = (caller_id,)
