"""What a request's server span says: its name and its HTTP semantic-convention attributes.

Built only for the spans that are recorded; a dropped request's span carries its ids and
nothing else. Method labels are bounded: a method the conventions do not know (clients
choose them) is ``_OTHER``, with the original cut to 64 characters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar.types import Scope

    from litestar_omnii_obs._internal.scrubbing import SecretScrubber

__all__ = ["KNOWN_METHODS", "method_label", "server_span_attributes", "span_name"]

#: The methods the HTTP semantic conventions know; any other (clients choose them) is ``_OTHER``.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_MAX_ORIGINAL_METHOD = 64
_SPAN_HEADERS = frozenset({b"user-agent", b"x-request-id"})
_REQUEST_ID_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"


def method_label(method: str) -> str:
    """``method`` if the semantic conventions know it, else ``_OTHER`` (a bounded label)."""
    return method if method in KNOWN_METHODS else "_OTHER"


def span_name(label: str, route: str | None) -> str:
    """``{method} {route template}``; ``HTTP`` for ``_OTHER``; the method alone when no route matched."""
    prefix = label if label != "_OTHER" else "HTTP"
    return f"{prefix} {route}" if route is not None else prefix


def server_span_attributes(scope: Scope, method: str, route: str | None, scrubber: SecretScrubber) -> dict[str, Any]:
    """HTTP semantic-convention attributes of a server span; the query string scrubbed like Sentry's data."""
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
        query = scrubber.scrub_query(raw_query.decode("latin-1"))
        if query:
            attributes["url.query"] = query
    if route is not None:
        attributes["http.route"] = route
    _add_peers(attributes, scope)
    _add_headers(attributes, scope)
    return attributes


def _add_peers(attributes: dict[str, Any], scope: Scope) -> None:
    """``server.address``/``server.port`` and ``client.address`` from the ASGI scope."""
    server = scope.get("server")
    if server:
        attributes["server.address"] = server[0]
        if server[1] is not None:
            attributes["server.port"] = server[1]
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]


def _add_headers(attributes: dict[str, Any], scope: Scope) -> None:
    """The user agent, and the caller's ``X-Request-ID`` when it looks like an id (nothing else is kept)."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _SPAN_HEADERS}
    if "user-agent" in headers:
        attributes["user_agent.original"] = headers["user-agent"]
    caller_id = headers.get("x-request-id")
    if caller_id and len(caller_id) <= 128 and not caller_id.encode().translate(None, _REQUEST_ID_CHARS):
        attributes["http.request.header.x-request-id"] = (caller_id,)
