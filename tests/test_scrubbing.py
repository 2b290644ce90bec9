"""The secret denylist and the scrubber (scrubbing.py), called directly on the data it is given in production.

Events are shaped as sentry-sdk hands them to ``event_scrubber`` and ``before_send``; the
end-to-end path (an app, a real Sentry ingest) is in test_sentry.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from litestar_omnii_obs._internal.event_scrubbing import EventSecretScrubber
from litestar_omnii_obs._internal.scrubbing import DEFAULT_SCRUB_KEYS, REDACTED, SecretScrubber


@pytest.mark.parametrize(
    "key",
    ["password", "X-Auth-Token", "session_id", "db_password", "Authorization", "COOKIE", "x-api-key", "SENTRY_DSN"],
)
def test_a_key_containing_a_denylisted_word_is_secret(key: str) -> None:
    assert SecretScrubber().is_secret(key)


@pytest.mark.parametrize("key", ["user", "route", "status", "author", "count"])
def test_ordinary_keys_are_not_secret(key: str) -> None:
    assert not SecretScrubber().is_secret(key)


def test_extra_words_add_to_the_defaults_and_dashes_match_underscores() -> None:
    scrubber = SecretScrubber(("Tenant-Key",))
    assert scrubber.is_secret("x_tenant_key")
    assert scrubber.is_secret("X-TENANT-KEY")
    assert all(scrubber.is_secret(word) for word in DEFAULT_SCRUB_KEYS)
    assert not SecretScrubber().is_secret("x_tenant_key")


@pytest.mark.parametrize("scrubber_type", [SecretScrubber, EventSecretScrubber])
def test_pii_keys_are_secret_only_while_pii_is_off(scrubber_type: type[SecretScrubber]) -> None:
    assert scrubber_type().is_secret("ip_address")
    assert not scrubber_type(send_default_pii=True).is_secret("ip_address")


def test_the_event_scrubber_still_applies_sentry_sdk_s_own_rules() -> None:
    """Built on sentry-sdk's EventScrubber: its request-header rules run too, with our key matching."""
    event: dict[str, Any] = {"request": {"headers": {"X-Tenant-Key": "t", "Accept": "a"}}}
    EventSecretScrubber(("tenant-key",)).scrub_event(event)  # type: ignore[arg-type]
    assert event["request"]["headers"]["X-Tenant-Key"].value == REDACTED
    assert event["request"]["headers"]["Accept"] == "a"


def test_nested_secrets_become_sentry_s_filtered_marker_and_the_rest_is_kept() -> None:
    data: dict[str, Any] = {"user": "ann", "nested": [{"api_key": "k-123456"}, ({"db_password": "pw"},)]}
    EventSecretScrubber().scrub_dict(data)
    assert data["user"] == "ann"
    assert data["nested"][0]["api_key"].value == REDACTED  # sentry-sdk's AnnotatedValue, as its own scrubber makes
    assert data["nested"][1][0]["db_password"].value == REDACTED


def test_the_scrubber_ignores_what_is_not_a_container() -> None:
    scrubber = EventSecretScrubber()
    for value in (None, "password=hunter2", 3, b"token"):
        scrubber.scrub_dict(value)
        scrubber.scrub_list(value)
        scrubber.redact_plain(value)


def test_already_serialised_data_gets_the_plain_marker() -> None:
    data: dict[str, Any] = {"extra": {"Session": "s", "list": [{"csrf": "c"}]}, "ok": 1}
    SecretScrubber().redact_plain(data)
    assert data == {"extra": {"Session": REDACTED, "list": [{"csrf": REDACTED}]}, "ok": 1}


def test_secret_query_parameters_are_filtered_and_order_is_kept() -> None:
    scrubber = SecretScrubber()
    assert scrubber.scrub_query("a=1&token=abc&b=&password=x") == "a=1&token=%5BFiltered%5D&b=&password=%5BFiltered%5D"
    assert scrubber.scrub_query("") == ""


def test_an_event_s_request_query_and_url_lose_their_secrets() -> None:
    event: dict[str, Any] = {
        "request": {"query_string": "q=ok&api_key=abcdef", "url": "https://h/p?token=abcdef&q=ok"},
        "tags": {"session": "s"},
        "contexts": {"app": {"secret": "x", "name": "n"}},
    }
    EventSecretScrubber().scrub_event(event)  # type: ignore[arg-type]
    assert event["request"]["query_string"] == "q=ok&api_key=%5BFiltered%5D"
    assert event["request"]["url"] == "https://h/p?token=%5BFiltered%5D&q=ok"
    assert event["tags"]["session"].value == REDACTED
    assert event["contexts"]["app"]["secret"].value == REDACTED
    assert event["contexts"]["app"]["name"] == "n"


def test_an_event_without_a_request_or_with_odd_shapes_is_left_alone() -> None:
    for event in ({}, {"request": "not a dict"}, {"request": {"query_string": None, "url": 5}}):
        before = repr(event)
        EventSecretScrubber().scrub_event(event)  # type: ignore[arg-type]
        assert repr(event) == before


def test_library_frames_lose_their_locals_and_app_frames_are_scrubbed() -> None:
    event: dict[str, Any] = {
        "exception": {
            "values": [
                {
                    "stacktrace": {
                        "frames": [
                            {"in_app": False, "vars": {"request": "<Request with headers>"}},
                            {"in_app": True, "vars": {"password": "hunter2", "n": "1"}},
                        ]
                    }
                }
            ]
        }
    }
    EventSecretScrubber().scrub_frames(event)  # type: ignore[arg-type]
    library, app = event["exception"]["values"][0]["stacktrace"]["frames"]
    assert "vars" not in library
    assert app["vars"]["password"].value == REDACTED
    assert app["vars"]["n"] == "1"


def test_secret_values_come_from_secret_headers_cookies_and_query_and_short_ones_are_skipped() -> None:
    headers = {
        "Authorization": "Bearer tok-123456",
        "Cookie": "sid=cookie-value-1; theme=dark",
        "User-Agent": "curl/8",
        "X-Token": "short",
    }
    values = SecretScrubber().secret_values(headers, "api_key=query-secret&page=2")
    assert {"Bearer tok-123456", "tok-123456", "cookie-value-1", "query-secret"} <= values
    assert "curl/8" not in values  # not a secret header
    assert "short" not in values
    assert "dark" not in values


def test_secret_values_are_blanked_wherever_they_appear() -> None:
    data: dict[str, Any] = {"message": "login with tok-123456 failed", "list": ["x tok-123456 y", 3]}
    result = SecretScrubber().redact_values(data, frozenset({"tok-123456"}))
    assert result == {"message": f"login with {REDACTED} failed", "list": [f"x {REDACTED} y", 3]}
