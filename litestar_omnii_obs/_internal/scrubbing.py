"""The secret denylist, and the key matching every span attribute, header and event goes through.

Keys *containing* a denylisted word (case-insensitive, ``-`` = ``_``) are secret:
``X-Auth-Token``, ``session_id``, ``db_password``. With PII off, sentry-sdk's own PII keys
(``ip_address``, ...) are secret too. No sentry-sdk here: the request path needs this with
Sentry off (issue 22); the event scrubber built on sentry-sdk's is
:class:`~litestar_omnii_obs._internal.event_scrubbing.EventSecretScrubber`.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

__all__ = ["DEFAULT_SCRUB_KEYS", "REDACTED", "SENTRY_PII_KEYS", "SecretScrubber"]

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


#: What a scrubbed value becomes: sentry-sdk's ``SENSITIVE_DATA_SUBSTITUTE`` (a canary checks they match).
REDACTED = "[Filtered]"

#: sentry-sdk's ``DEFAULT_PII_DENYLIST`` (a canary checks they match): secret keys while PII is off.
SENTRY_PII_KEYS = ("x_forwarded_for", "x_real_ip", "ip_address", "remote_addr")


class SecretScrubber:
    """Tells secret keys apart and blanks their values in plain (already serialised) data."""

    def __init__(self, extra_keys: tuple[str, ...] = (), send_default_pii: bool = False) -> None:
        self.words = tuple(dict.fromkeys(k.lower().replace("-", "_") for k in DEFAULT_SCRUB_KEYS + extra_keys))
        self.exact = frozenset(() if send_default_pii else SENTRY_PII_KEYS)

    def is_secret(self, key: str) -> bool:
        normalized = key.lower().replace("-", "_")
        return normalized in self.exact or any(word in normalized for word in self.words)

    def redact_plain(self, value: object) -> None:
        """Values of secret keys in already-serialised data become ``[Filtered]`` (plain strings, no markers)."""
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
