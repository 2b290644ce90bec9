"""The scrubber sentry-sdk runs on every outgoing event: ours, built on its :class:`~sentry_sdk.scrubber.EventScrubber`.

Loaded only when Sentry starts (issue 22). The key matching is
:class:`~litestar_omnii_obs._internal.scrubbing.SecretScrubber`'s; sentry-sdk's own rules
(request, breadcrumbs, extra, user, frame variables, spans) apply as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from sentry_sdk.scrubber import EventScrubber
from sentry_sdk.utils import iter_event_frames

from litestar_omnii_obs._internal._compat.sentry import AnnotatedValue
from litestar_omnii_obs._internal.scrubbing import SecretScrubber

if TYPE_CHECKING:
    from litestar_omnii_obs._internal._compat import Event

__all__ = ["EventSecretScrubber"]


class EventSecretScrubber(SecretScrubber, EventScrubber):
    """An :class:`EventScrubber` that matches keys *containing* a denylisted word."""

    def __init__(self, extra_keys: tuple[str, ...] = (), send_default_pii: bool = False) -> None:
        EventScrubber.__init__(self, denylist=[], recursive=True, send_default_pii=send_default_pii)
        SecretScrubber.__init__(self, extra_keys, send_default_pii)

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

    def scrub_frames(self, event: Event) -> None:
        """Library frames lose their locals: Litestar's hold whole requests (headers, body) as reprs."""
        for frame in iter_event_frames(event):
            if frame.get("in_app") is False:
                frame.pop("vars", None)
            elif "vars" in frame:
                self.scrub_dict(frame["vars"])

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
