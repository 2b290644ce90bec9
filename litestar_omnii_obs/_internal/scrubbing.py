"""The secret denylist and the scrubber every outgoing event and span attribute goes through.

Keys *containing* a denylisted word (case-insensitive, ``-`` = ``_``) are secret:
``X-Auth-Token``, ``session_id``, ``db_password``. Built on sentry-sdk's
:class:`~sentry_sdk.scrubber.EventScrubber`, so sentry-sdk's own rules apply as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from sentry_sdk.scrubber import EventScrubber
from sentry_sdk.utils import iter_event_frames

from litestar_omnii_obs._internal._compat import SENSITIVE_DATA_SUBSTITUTE, AnnotatedValue

if TYPE_CHECKING:
    from litestar_omnii_obs._internal._compat import Event

__all__ = ["DEFAULT_SCRUB_KEYS", "REDACTED", "SecretScrubber"]

#: Words that mark a key as secret wherever they appear in it (case-insensitive, ``-`` = ``_``).
DEFAULT_SCRUB_KEYS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "auth_",
    "cookie",
    "session",
    "csrf",
    "xsrf",
    "private_key",
    "credential",
    "dsn",
)


REDACTED: str = SENSITIVE_DATA_SUBSTITUTE


class SecretScrubber(EventScrubber):
    """An :class:`EventScrubber` that matches keys *containing* a denylisted word."""

    def __init__(self, extra_keys: tuple[str, ...] = (), send_default_pii: bool = False) -> None:
        super().__init__(denylist=[], recursive=True, send_default_pii=send_default_pii)
        self.words = tuple(dict.fromkeys(k.lower().replace("-", "_") for k in DEFAULT_SCRUB_KEYS + extra_keys))
        self.exact = frozenset(self.denylist)  # sentry-sdk's PII list when PII is off

    def is_secret(self, key: str) -> bool:
        normalized = key.lower().replace("-", "_")
        return normalized in self.exact or any(word in normalized for word in self.words)

    def scrub_dict(self, d: object) -> None:
        if not isinstance(d, dict):
            return
        for key, value in d.items():
            if isinstance(key, str) and self.is_secret(key):
                d[key] = AnnotatedValue.substituted_because_contains_sensitive_data()
            else:
                self.scrub_dict(value)
                self.scrub_list(value)

    def scrub_list(self, lst: object) -> None:
        if not isinstance(lst, list | tuple):
            return
        for value in cast("list[Any]", lst):
            self.scrub_dict(value)
            self.scrub_list(value)

    def redact_plain(self, value: object) -> None:
        """Like :meth:`scrub_dict` for already-serialised data: values become ``[Filtered]``."""
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and self.is_secret(key):
                    value[key] = REDACTED
                else:
                    self.redact_plain(item)
        elif isinstance(value, list):
            for item in value:
                self.redact_plain(item)

    def scrub_query(self, query: str) -> str:
        pairs = parse_qsl(query, keep_blank_values=True)
        return urlencode([(k, REDACTED if self.is_secret(k) else v) for k, v in pairs])

    def scrub_frames(self, event: Event) -> None:
        """Library frames lose their locals: Litestar's hold whole requests (headers, body) as reprs."""
        for frame in iter_event_frames(event):
            if frame.get("in_app") is False:
                frame.pop("vars", None)
            elif "vars" in frame:
                self.scrub_dict(frame["vars"])

    def secret_values(self, headers: Mapping[str, str], query: str) -> frozenset[str]:
        """Values of secret headers, cookies and query parameters, to blank wherever they appear."""
        values: set[str] = set()
        for name, value in headers.items():
            if name.lower() == "cookie":
                for part in value.split(";"):
                    values.add(part.partition("=")[2].strip())
            if self.is_secret(name):
                values.add(value)
                values.update(value.split())  # "Bearer <token>"
        values.update(v for k, v in parse_qsl(query, keep_blank_values=True) if self.is_secret(k))
        return frozenset(v for v in values if len(v) >= 6)

    def redact_values(self, value: object, secrets: frozenset[str]) -> object:
        """Replace every occurrence of ``secrets`` inside the strings of ``value`` (serialised data)."""
        if isinstance(value, str):
            for secret in secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            for key, item in value.items():
                value[key] = self.redact_values(item, secrets)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                value[index] = self.redact_values(item, secrets)
        return value

    def scrub_event(self, event: Event) -> None:
        super().scrub_event(event)
        for section in ("tags", "contexts"):
            self.scrub_dict(event.get(section))
        self.scrub_request_query(event)

    def scrub_request_query(self, event: Event) -> None:
        """Secret query parameters of the event's request (its query string and URL) become ``[Filtered]``."""
        request = event.get("request")
        if isinstance(request, dict):
            query = request.get("query_string")
            if isinstance(query, str) and query:
                request["query_string"] = self.scrub_query(query)
            url = request.get("url")
            if isinstance(url, str) and "?" in url:
                parts = urlsplit(url)
                request["url"] = parts._replace(query=self.scrub_query(parts.query)).geturl()
