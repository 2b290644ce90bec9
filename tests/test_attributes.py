"""Which host a span names: ``Host``, and forwarded headers only from proxies the user trusts.

A real uvicorn server on 127.0.0.1 (its own proxy-header handling off, so what the span says is
the plugin's doing) and a real OTLP receiver; each request sends the headers a client or a proxy
would. The immediate client is always 127.0.0.1, so trusting it stands for trusting the proxy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar, get

from litestar_omnii_obs import ConfigError, MetricsConfig, ObservabilityConfig, ObservabilityPlugin, TracingConfig
from tests.conftest import free_port
from tests.peers.otlp_http_receiver import OtlpHttpReceiver


@get("/where")
async def where() -> str:
    return "here"


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as peer:
        yield peer


@contextmanager
def serve_directly(app: Litestar) -> Iterator[str]:
    """uvicorn without its proxy-header middleware, as when nothing in front is trusted by uvicorn."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on", proxy_headers=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(20)


def span_attributes(receiver: OtlpHttpReceiver, headers: dict[str, str], *trusted: str) -> dict[str, Any]:
    """The server span's attributes for one ``GET /where`` sent with ``headers``, ``trusted`` proxies configured."""
    config = ObservabilityConfig(
        metrics=MetricsConfig(sink="off"),
        tracing=TracingConfig(otlp_endpoint=receiver.endpoint, sampler="always_on", trusted_proxies=trusted),
    )
    with serve_directly(Litestar(route_handlers=[where], plugins=[ObservabilityPlugin(config)])) as url:
        assert httpx.get(url + "/where", headers=headers).status_code == 200
    return receiver.wait_for_spans(1)[0].attributes


def peers(attributes: dict[str, Any]) -> tuple[Any, ...]:
    return (
        attributes["server.address"],
        attributes["server.port"],
        attributes["url.scheme"],
        attributes["client.address"],
    )


def test_the_span_names_the_host_the_client_asked_for_not_the_socket(receiver: OtlpHttpReceiver) -> None:
    assert peers(span_attributes(receiver, {"host": "api.example.com"})) == ("api.example.com", 80, "http", "127.0.0.1")


def test_a_port_in_host_is_the_server_port(receiver: OtlpHttpReceiver) -> None:
    assert peers(span_attributes(receiver, {"host": "api.example.com:8443"}))[:2] == ("api.example.com", 8443)


def test_an_ipv6_host_loses_its_brackets(receiver: OtlpHttpReceiver) -> None:
    assert peers(span_attributes(receiver, {"host": "[2001:db8::1]:8080"}))[:2] == ("2001:db8::1", 8080)


def test_the_default_host_header_names_the_address_the_client_dialled(receiver: OtlpHttpReceiver) -> None:
    attributes = span_attributes(receiver, {})
    assert attributes["server.address"] == "127.0.0.1"
    assert isinstance(attributes["server.port"], int)
    assert attributes["server.port"] > 0


def test_forwarded_headers_from_a_client_nobody_trusts_are_ignored(receiver: OtlpHttpReceiver) -> None:
    """By default no proxy is trusted: anyone could send these headers."""
    headers = {
        "host": "api.example.com",
        "x-forwarded-host": "evil.example",
        "x-forwarded-proto": "https",
        "x-forwarded-for": "203.0.113.7",
        "forwarded": "for=198.51.100.1;host=evil.example;proto=https",
    }
    assert peers(span_attributes(receiver, headers)) == ("api.example.com", 80, "http", "127.0.0.1")


def test_forwarded_headers_from_a_proxy_outside_the_trusted_networks_are_ignored(receiver: OtlpHttpReceiver) -> None:
    headers = {"host": "pod-7:8000", "x-forwarded-host": "evil.example", "x-forwarded-for": "203.0.113.7"}
    assert peers(span_attributes(receiver, headers, "10.0.0.0/8")) == ("pod-7", 8000, "http", "127.0.0.1")


def test_a_trusted_proxy_s_x_forwarded_headers_name_the_original_request(receiver: OtlpHttpReceiver) -> None:
    headers = {
        "host": "pod-7:8000",
        "x-forwarded-host": "shop.example.com",
        "x-forwarded-proto": "https",
        "x-forwarded-for": "203.0.113.7",
    }
    assert peers(span_attributes(receiver, headers, "127.0.0.1")) == ("shop.example.com", 443, "https", "203.0.113.7")


def test_rfc_7239_forwarded_wins_over_the_x_forwarded_headers(receiver: OtlpHttpReceiver) -> None:
    headers = {
        "host": "pod-7:8000",
        "forwarded": 'for="[2001:db8::7]:4711";proto=https;host=shop.example.com:8443, for=10.0.0.2',
        "x-forwarded-host": "other.example",
        "x-forwarded-for": "198.51.100.1",
    }
    assert peers(span_attributes(receiver, headers, "127.0.0.0/8", "10.0.0.0/8")) == (
        "shop.example.com",
        8443,
        "https",
        "2001:db8::7",
    )


def test_the_client_is_the_last_address_before_the_trusted_proxies(receiver: OtlpHttpReceiver) -> None:
    """uvicorn's rule: from the nearest hop back, the first address that is not a trusted proxy."""
    headers = {"x-forwarded-for": "198.51.100.9, 203.0.113.7, 10.1.2.3"}
    assert span_attributes(receiver, headers, "127.0.0.1", "10.0.0.0/8")["client.address"] == "203.0.113.7"


def test_trusting_every_client_takes_the_first_forwarded_address(receiver: OtlpHttpReceiver) -> None:
    headers = {"x-forwarded-for": "198.51.100.9, 203.0.113.7", "x-forwarded-proto": "https, http"}
    attributes = span_attributes(receiver, headers, "*")
    assert (attributes["client.address"], attributes["url.scheme"]) == ("198.51.100.9", "https")


def test_an_unknown_forwarded_scheme_is_ignored(receiver: OtlpHttpReceiver) -> None:
    headers = {"host": "api.example.com", "x-forwarded-proto": "gopher"}
    assert peers(span_attributes(receiver, headers, "*"))[1:3] == (80, "http")


def test_the_trusted_proxies_come_from_the_uvicorn_style_variable() -> None:
    config = ObservabilityConfig.from_env({"OMNII_OBS_FORWARDED_ALLOW_IPS": "10.0.0.0/8, 127.0.0.1,::1"})
    assert config.tracing.trusted_proxies == ("10.0.0.0/8", "127.0.0.1", "::1")
    assert ObservabilityConfig.from_env({"OMNII_OBS_FORWARDED_ALLOW_IPS": "*"}).tracing.trusted_proxies == ("*",)
    assert ObservabilityConfig.from_env({}).tracing.trusted_proxies == ()


def test_a_wrong_trusted_proxy_fails_at_start_up_naming_the_variable_and_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as raised:
        ObservabilityConfig.from_env({"OMNII_OBS_FORWARDED_ALLOW_IPS": "10.0.0.0/8,proxy.internal"})
    [(name, value, allowed)] = raised.value.problems
    assert (name, value) == ("OMNII_OBS_FORWARDED_ALLOW_IPS", "10.0.0.0/8,proxy.internal")
    assert "IP addresses or CIDR networks" in allowed
    assert "'*'" in allowed


def test_a_wrong_trusted_proxy_in_code_fails_naming_the_entry() -> None:
    with pytest.raises(ConfigError) as raised:
        TracingConfig(trusted_proxies=("10.0.0.300",))
    [(name, value, allowed)] = raised.value.problems
    assert (name, value) == ("trusted_proxies", "10.0.0.300")
    assert "'10.0.0.300' is not an IP address, a CIDR network or '*'" in allowed


def test_a_host_whose_port_is_not_ascii_digits_has_no_port_and_breaks_nothing() -> None:
    # A Host header is latin-1: "a:\xb2" (superscript two) once made int() raise inside the request hook.
    from litestar_omnii_obs._internal.attributes import server_span_attributes
    from litestar_omnii_obs._internal.scrubbing import SecretScrubber

    scope: Any = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "scheme": "http",
        "http_version": "1.1",
        "query_string": b"",
        "headers": [(b"host", b"a:\xb2")],
        "client": ("10.0.0.7", 5000),
        "server": ("127.0.0.1", 8000),
    }
    attributes = server_span_attributes(scope, "GET", "/", SecretScrubber(()))
    assert (attributes["server.address"], attributes["server.port"]) == ("a", 80)  # the scheme's port
