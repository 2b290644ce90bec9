"""Hostile input against a real uvicorn server, a real OTLP/gRPC receiver and a real Sentry ingest on 127.0.0.1.

* 10,000 distinct raw paths never grow the set of route labels (metric lines, span names, ``http.route``,
  OTLP metric attributes) beyond the declared routes plus the unmatched label.
* Oversized headers, broken percent-encoding, non-UTF-8 bytes and forged ``traceparent`` values never crash a
  request, and a bad ``traceparent`` starts a fresh trace.
* Secrets planted everywhere a request or a handler can put them never reach Sentry or the metric lines.
* Invented request methods (under uvicorn with h11, and granian, as subprocesses) are answered and labelled
  ``_OTHER`` (span name ``HTTP``, the original kept in ``http.request.method_original``), never a label of their own.

Figures from the first test are written to ``tests/reliability/results/hostile.json``.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import string
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sentry_sdk
from litestar import Litestar, post
from litestar.params import FromPath, JSONBody

from example_app.app import boom, get_user, graph_query, health, sync
from litestar_omnii_obs import (
    MetricsConfig,
    ObservabilityConfig,
    ObservabilityPlugin,
    SentryConfig,
    TracingConfig,
    capture_error,
    timed_operation,
)
from tests.conftest import read_lines, serve
from tests.peers.otlp_http_receiver import OtlpHttpReceiver
from tests.peers.sentry_ingest import SentryIngest
from tests.reliability.servers import metric_lines, start_server

RESULTS = Path(__file__).resolve().parent / "results"
UNMATCHED = "UNMATCHED"
EXCLUDED = "/health"


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as peer:
        yield peer


def example_app(config: ObservabilityConfig) -> Litestar:
    """example_app's routes and handlers, with a config built in code instead of read from the environment."""
    return Litestar(route_handlers=[health, get_user, graph_query, sync, boom], plugins=[ObservabilityPlugin(config)])


def config_for(sink: Path, endpoint: str | None, dsn: str | None = None) -> ObservabilityConfig:
    return ObservabilityConfig(
        environment="hostile",
        metrics=MetricsConfig(sink=str(sink), max_queue=100_000),
        sentry=SentryConfig(dsn=dsn, traces_sample_rate=1.0, flush_timeout=5.0),
        tracing=TracingConfig(otlp_endpoint=endpoint, shutdown_timeout=30.0),
    )


def declared_templates(app: Litestar) -> set[str]:
    """What Litestar puts in ``path_template`` for each declared route (``/users/{user_id}``)."""
    return {route.path_format for route in app.routes}


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send ``request`` byte for byte over a plain socket; return everything the server answered."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:  # a server refusing a request may reset while we still send
            pass
    return received


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


# --------------------------------------------------------------------------- (a) label cardinality

SAFE = string.ascii_letters + string.digits + "-_~!$&'()*+,;=:@"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


def _segment(rng: random.Random, length: int) -> str:
    out = []
    while len(out) < length:
        if rng.random() < 0.1:
            out.append(f"%{rng.randrange(256):02X}")  # any byte, percent-encoded (%00, %2F, %FF, ...)
        else:
            out.append(rng.choice(SAFE))
    return "".join(out)


def hostile_requests(n: int, seed: int = 6) -> list[tuple[str, str]]:
    """``n`` requests with distinct raw paths: ids under declared routes, unmatched junk, paths up to 4 KB."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []

    def add(method: str, path: str) -> None:
        if path not in seen and path != EXCLUDED:
            seen.add(path)
            out.append((method, path))

    add("GET", "/boom")
    add("POST", "/graph/query")
    while len(out) < n:
        kind = rng.random()
        if kind < 0.30:  # a fresh id under a declared route
            add("GET", f"/users/{rng.randrange(10 ** rng.randrange(1, 40))}")
        elif kind < 0.36:  # a non-int id under the int route
            add("GET", f"/users/{_segment(rng, rng.randrange(1, 30))}")
        elif kind < 0.46:  # declared route with a free-text parameter
            add("POST", f"/sync/{_segment(rng, rng.randrange(1, 40))}")
        elif kind < 0.52:  # declared route, undeclared method
            add(rng.choice(("PUT", "DELETE", "PATCH")), f"/users/{rng.randrange(10**9)}")
        elif kind < 0.58:  # under the OpenAPI routes Litestar adds
            add("GET", f"/schema/{_segment(rng, rng.randrange(1, 40))}")
        elif kind < 0.68:  # long paths, 512 bytes to 4 KB
            target, path = rng.randrange(512, 4096), ""
            while len(path) < target:
                path += "/" + _segment(rng, rng.randrange(1, 200))
            add(rng.choice(METHODS), path)
        else:  # unmatched junk, some of it next to real routes
            prefix = rng.choice(("", "/users", "/graph", "/sync", "/health", "/boom", "/schema", "/users/1"))
            depth = rng.randrange(1, 6)
            add(rng.choice(METHODS), prefix + "/" + "/".join(_segment(rng, rng.randrange(1, 20)) for _ in range(depth)))
    return out


async def _send_all(port: int, requests: list[tuple[str, str]], connections: int) -> list[tuple[str, int, str]]:
    """Send every request byte for byte over ``connections`` keep-alive connections (one request in flight on each).

    A minimal HTTP/1.1 client: the raw path goes on the wire exactly as generated, and a request costs the client
    far less than with a full-featured one, so the server (the code under test) gets most of the two cores.
    Returns ("METHOD raw-path", status, X-Request-ID) per request.
    """
    pending = iter(requests)
    results: list[tuple[str, int, str]] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for method, path in pending:
                body = b'{"user_id": "u-1"}' if method == "POST" else b""
                head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode("ascii") + body)
                status_line, *header_lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = dict(line.lower().split(": ", 1) for line in header_lines if line)
                await reader.readexactly(int(headers["content-length"]))
                results.append((f"{method} {path}", int(status_line.split(" ")[1]), headers.get("x-request-id", "")))
                if headers.get("connection") == "close":
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return results


def test_ten_thousand_distinct_paths_keep_route_labels_bounded(receiver: OtlpHttpReceiver, sink: Path) -> None:
    requests = hostile_requests(10_000)
    app = example_app(config_for(sink, receiver.endpoint))
    templates = declared_templates(app)
    started = time.monotonic()
    with serve(app) as url:
        answers = asyncio.run(_send_all(port_of(url), requests, connections=50))
    elapsed = time.monotonic() - started
    spans = receiver.wait_for_spans(len(answers), timeout=30)
    duration_points = receiver.metric_points("http.server.request.duration")

    statuses = Counter(status for _, status, _ in answers)
    assert len(answers) == len(requests)
    assert len({sent for sent, _, _ in answers}) == len(requests)
    assert set(statuses) <= {200, 400, 404, 405, 500}, statuses
    assert statuses[500] == 1  # only GET /boom

    lines = [r for r in read_lines(sink) if r["metric"] == "api_latency"]
    labels = Counter(r["route"] for r in lines)
    assert len(lines) == len(answers)  # one record per request, whatever its path
    assert set(labels) <= templates | {UNMATCHED}, set(labels) - templates
    assert len(labels) <= len(templates) + 1
    assert {r["trace_id"] for r in lines} == {request_id for _, _, request_id in answers}

    span_routes = {s.attributes["http.route"] for s in spans if "http.route" in s.attributes}
    span_names = {s.name for s in spans}
    methods = {method for method, _ in requests}
    assert len(spans) == len(answers)
    assert span_routes <= templates
    assert span_names <= {f"{m} {t}" for m in methods for t in templates} | methods
    assert len(span_names) <= len(methods) * (len(templates) + 1)
    unmatched = [s for s in spans if "http.route" not in s.attributes]
    assert unmatched
    assert all(s.name == s.attributes["http.request.method"] for s in unmatched)
    assert {s.trace_id for s in spans} == {request_id for _, _, request_id in answers}
    metric_routes = {p.attributes["http.route"] for p in duration_points}
    assert metric_routes <= templates | {UNMATCHED}
    assert sum(p.count or 0 for p in duration_points) >= len(answers)

    RESULTS.mkdir(exist_ok=True)
    figures: dict[str, Any] = {
        "requests_sent": len(answers),
        "distinct_requests": len({sent for sent, _, _ in answers}),
        "distinct_raw_paths": len({sent.split(" ", 1)[1] for sent, _, _ in answers}),
        "longest_path_bytes": max(len(sent.split(" ", 1)[1]) for sent, _, _ in answers),
        "connections": 50,
        "elapsed_seconds": round(elapsed, 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "declared_routes": len(templates),
        "metric_lines": len(lines),
        "distinct_metric_route_labels": len(labels),
        "metric_route_labels": dict(sorted(labels.items())),
        "spans_received": len(spans),
        "distinct_span_names": len(span_names),
        "span_names": sorted(span_names),
        "distinct_span_http_routes": len(span_routes),
        "distinct_otlp_metric_http_routes": len(metric_routes),
    }
    (RESULTS / "hostile.json").write_text(json.dumps(figures, indent=2) + "\n")


# --------------------------------------------------------------------------- (b) malformed requests

FORGED_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
FORGED_SPAN = "00f067aa0ba902b7"

BAD_TRACEPARENTS = {
    "version-ff": f"ff-{FORGED_TRACE}-{FORGED_SPAN}-01",
    "version-one-digit": f"0-{FORGED_TRACE}-{FORGED_SPAN}-01",
    "all-zero-trace-id": f"00-{'0' * 32}-{FORGED_SPAN}-01",
    "all-zero-span-id": f"00-{FORGED_TRACE}-{'0' * 16}-01",
    "trace-id-too-short": f"00-{FORGED_TRACE[:16]}-{FORGED_SPAN}-01",
    "span-id-too-short": f"00-{FORGED_TRACE}-{FORGED_SPAN[:8]}-01",
    "no-flags": f"00-{FORGED_TRACE}-{FORGED_SPAN}",
    "non-hex-trace-id": f"00-{FORGED_TRACE[:30]}zz-{FORGED_SPAN}-01",
    "non-hex-flags": f"00-{FORGED_TRACE}-{FORGED_SPAN}-0g",
    "version-00-extra-field": f"00-{FORGED_TRACE}-{FORGED_SPAN}-01-extra",
    "empty": "",
    "garbage": "not a traceparent at all",
    "huge": f"00-{FORGED_TRACE}-{FORGED_SPAN}-01" + "-x" * 32_000,
}


def _raw_get(target: bytes, *headers: bytes) -> bytes:
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *headers, b"Connection: close", b"", b""]
    return b"\r\n".join(lines)


RAW_REQUESTS: dict[str, bytes] = {
    "invalid-percent-encoding": _raw_get(b"/users/%zz"),
    "lone-percent": _raw_get(b"/%"),
    "truncated-percent": _raw_get(b"/users/1%"),
    "encoded-nul": _raw_get(b"/users/%00"),
    "encoded-invalid-utf8": _raw_get(b"/users/%ff%fe"),
    "non-utf8-path": _raw_get(b"/users/\xff\xfe"),
    "non-utf8-header": _raw_get(b"/users/1", b"User-Agent: \xff\xfe\x80"),
    "non-utf8-traceparent": _raw_get(b"/users/1", b"traceparent: 00-\xff" + FORGED_TRACE.encode()[1:] + b"-ab-01"),
    "header-64kb": _raw_get(b"/users/1", b"X-Big: " + b"a" * 65_536),
    "user-agent-64kb": _raw_get(b"/users/1", b"User-Agent: " + b"u" * 65_536),
    "x-request-id-64kb": _raw_get(b"/users/1", b"X-Request-ID: " + b"r" * 65_536),
    "200-headers": _raw_get(b"/users/1", *(b"X-H-%d: %d" % (i, i) for i in range(200))),
    "tracestate-and-baggage-24kb-each": _raw_get(
        b"/users/1",
        f"traceparent: 00-{FORGED_TRACE}-{FORGED_SPAN}-01".encode(),
        b"tracestate: " + b"k=v," * 6_000,
        b"baggage: " + b"k=v," * 6_000,
    ),
    "path-8kb": _raw_get(b"/" + b"p" * 8192),
    "absolute-form-target": _raw_get(b"http://evil.example/users/1"),
    "asterisk-target": _raw_get(b"*"),
}


def test_malformed_requests_never_crash_a_request(receiver: OtlpHttpReceiver, sink: Path) -> None:
    app = example_app(config_for(sink, receiver.endpoint))
    templates = declared_templates(app)
    answers: dict[str, int] = {}
    reached_app = 0  # requests uvicorn handed to the app (their answer carries X-Request-ID)
    followups: list[int] = []
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        for name, request in RAW_REQUESTS.items():
            answer = raw_exchange(port_of(url), request)
            answers[name] = status_of(answer)
            reached_app += b"\r\nx-request-id: " in answer.split(b"\r\n\r\n", 1)[0]
            followups.append(client.get("/users/1").status_code)  # the server keeps serving
    assert followups == [200] * len(RAW_REQUESTS)
    assert reached_app >= len(RAW_REQUESTS) - 2  # uvicorn itself refuses only the non-UTF-8 path
    for name, status in answers.items():
        assert 200 <= status < 600, (name, status)
        assert status != 500, name  # nothing in our code (or anybody's) failed on it
    lines = read_lines(sink)  # every line is valid JSON, whatever bytes the request carried
    assert len(lines) == reached_app + len(followups)  # one record per request that reached the app
    assert {r["route"] for r in lines} <= templates | {UNMATCHED}
    assert all(r["status"] != 500 for r in lines)
    assert all(s.status_code != "error" for s in receiver.spans())


def test_a_forged_traceparent_starts_a_fresh_trace(receiver: OtlpHttpReceiver, sink: Path) -> None:
    app = example_app(config_for(sink, receiver.endpoint))
    responses: dict[str, httpx.Response] = {}
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        for i, (name, value) in enumerate(BAD_TRACEPARENTS.items()):
            responses[name] = client.get(f"/users/{1000 + i}", headers={"traceparent": value})
        valid = client.get("/users/1", headers={"traceparent": f"00-{FORGED_TRACE}-{FORGED_SPAN}-01"})
        raw_answer = raw_exchange(port_of(url), RAW_REQUESTS["non-utf8-traceparent"])
    all_spans = receiver.spans()
    assert len(all_spans) == len(BAD_TRACEPARENTS) + 2
    spans = {s.attributes["url.path"]: s for s in all_spans}

    # The control: a well-formed traceparent is joined, so the checks below can tell.
    [joined] = [s for s in all_spans if s.trace_id == FORGED_TRACE]
    assert (joined.attributes["url.path"], joined.parent_span_id) == ("/users/1", FORGED_SPAN)
    assert valid.headers["x-request-id"] == FORGED_TRACE
    for i, name in enumerate(BAD_TRACEPARENTS):
        response, span = responses[name], spans[f"/users/{1000 + i}"]
        assert response.status_code == 200, name
        assert span.parent_span_id is None, name
        assert span.trace_id != FORGED_TRACE, name
        assert span.trace_id != "0" * 32, name
        assert response.headers["x-request-id"] == span.trace_id, name
    assert status_of(raw_answer) == 200
    request_id = raw_answer.split(b"x-request-id: ", 1)[1][:32].decode()
    [raw_span] = [s for s in all_spans if s.trace_id == request_id]
    assert raw_span.parent_span_id is None


# --------------------------------------------------------------------------- (c) secrets

SECRETS = {
    "authorization": "s3cr3t-authorization-4d1f",
    "cookie_csrf": "s3cr3t-cookie-csrf-8b2e",
    "cookie_session": "s3cr3t-cookie-session-77aa",
    "x_api_key": "s3cr3t-x-api-key-19c3",
    "x_auth_token": "s3cr3t-x-auth-token-5e6f",
    "query_token": "s3cr3t-query-token-0a9b",
    "query_password": "s3cr3t-query-password-c4d8",
    "query_api_key": "s3cr3t-query-api-key-e2f1",
    "body_password": "s3cr3t-body-password-3b7c",
    "body_api_key": "s3cr3t-body-api-key-91de",
    "body_nested": "s3cr3t-body-nested-6a0c",
    "local_password": "s3cr3t-local-password-f00d",
    "local_token": "s3cr3t-local-token-beef",
    "local_nested": "s3cr3t-local-nested-cafe",
    "breadcrumb": "s3cr3t-breadcrumb-d00d",
    "breadcrumb_nested": "s3cr3t-breadcrumb-nested-abba",
    "extra": "s3cr3t-extra-1234",
    "extra_nested": "s3cr3t-extra-nested-5678",
    "tag": "s3cr3t-tag-9abc",
    "tag_auth": "s3cr3t-tag-auth-def0",
}


def context(secret: bytes, blob: bytes) -> str:
    """Where ``secret`` occurs in ``blob`` (the bytes just before it), or "" when it does not."""
    at = blob.find(secret)
    return "" if at < 0 else "..." + blob[max(0, at - 90) : at].decode("utf-8", "replace") + "<SECRET>"


@post("/leak/{account:str}", status_code=200)
async def leak(account: FromPath[str], data: JSONBody[dict[str, Any]]) -> None:
    password = SECRETS["local_password"]  # locals Sentry would ship with the stack frame
    api_token = SECRETS["local_token"]
    settings = {"db": {"private_key": SECRETS["local_nested"]}, "account": account}
    sentry_sdk.add_breadcrumb(
        category="auth",
        message="login attempt",
        data={"password": SECRETS["breadcrumb"], "nested": {"client_secret": SECRETS["breadcrumb_nested"]}},
    )
    async with timed_operation("lookup_account"):
        await asyncio.sleep(0)
    capture_error(
        PermissionError("denied"),
        user_id=account,
        tags={"session_id": SECRETS["tag"], "auth_token": SECRETS["tag_auth"], "area": "login"},
        extra={"api_key": SECRETS["extra"], "request": {"headers": {"x-secret": SECRETS["extra_nested"]}}},
    )
    raise RuntimeError(f"login failed for {account} ({len(password) + len(api_token)}, {len(settings)}, {len(data)})")


def test_planted_secrets_never_reach_sentry_or_metric_lines(receiver: OtlpHttpReceiver, sink: Path) -> None:
    with SentryIngest() as ingest:
        config = config_for(sink, receiver.endpoint, dsn=ingest.dsn)
        app = Litestar(route_handlers=[leak], plugins=[ObservabilityPlugin(config)])
        with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            response = client.post(
                "/leak/acct-7",
                params={
                    "token": SECRETS["query_token"],
                    "password": SECRETS["query_password"],
                    "api_key": SECRETS["query_api_key"],
                    "page": "3",
                },
                headers={
                    "Authorization": f"Bearer {SECRETS['authorization']}",
                    "Cookie": f"csrftoken={SECRETS['cookie_csrf']}; sessionid={SECRETS['cookie_session']}",
                    "X-Api-Key": SECRETS["x_api_key"],
                    "X-Auth-Token": SECRETS["x_auth_token"],
                },
                json={
                    "password": SECRETS["body_password"],
                    "api_key": SECRETS["body_api_key"],
                    "profile": {"credentials": {"secret": SECRETS["body_nested"]}},
                },
            )
        events = ingest.events()
        sentry_spans = ingest.wait_for_otlp_spans(1)
        sent = b"".join(ingest.raw_bodies())
    assert response.status_code == 500
    # Both reports arrived and carry what they should, so the absence checks below are meaningful.
    assert sorted(e["exception"]["values"][-1]["type"] for e in events) == ["PermissionError", "RuntimeError"]
    assert "POST /leak/{account}" in {s.name for s in sentry_spans}  # performance data went to Sentry (OTLP)
    assert b"page=3" in sent
    assert b"acct-7" in sent
    assert b"login attempt" in sent
    written = sink.read_bytes()
    assert b"/leak/{account}" in written
    leaked = {name: context(secret.encode(), sent + written) for name, secret in SECRETS.items()}
    leaked = {name: where for name, where in leaked.items() if where}
    assert leaked == {}, "secrets that left the process:\n" + "\n".join(f"{k}: {v}" for k, v in sorted(leaked.items()))
    spans = receiver.spans()
    exported = json.dumps([[s.name, s.attributes, [e.attributes for e in s.events]] for s in spans], default=str)
    assert [name for name, secret in SECRETS.items() if secret in exported] == []


# --------------------------------------------------------------------------- (d) invented methods

# Request-method tokens a client can invent (RFC 9110 token characters): none is a method the HTTP semantic
# conventions know, so each must be labelled ``_OTHER``, never become a label value of its own.
INVENTED_METHODS = (
    "FOO",
    "BREW",
    "PURGE",
    "PROPFIND",
    "MKCOL",
    "LINK",
    "QUERY",
    "SEARCH",
    "M-SEARCH",
    "get",  # methods are case-sensitive: not GET
    "Post",
    "GET2",
    "DELETE-ALL",
    "HEAD~",
    "123",
    "X_Y.Z",
    "!#$%&'*+-.^_`|~",
    "WHATEVER",
    "A" * 100,
    "Z" * 900,
)
STANDARD_METHODS = ("GET", "POST", "DELETE", "OPTIONS", "HEAD")
METHOD_SERVERS = [
    pytest.param("uvicorn", "h11", id="uvicorn-h11"),  # httptools refuses unknown methods itself; h11 passes them on
    pytest.param("granian", None, id="granian"),
]


def invented_method_requests() -> list[tuple[str, str, dict[str, str]]]:
    """(method, raw target, extra headers): every invented method on its own odd target, plus standard ones."""
    targets = [
        "/users/{i}",
        "/graph/query",
        "/nothing/{i}",
        "/boom",
        "/users/%zz{i}",
        "/sync/" + "x" * 300 + "{i}",
        "/" + "/".join(["seg{i}"] * 200),
        "/users/{i}?token=abc&page={i}",
    ]
    requests: list[tuple[str, str, dict[str, str]]] = []
    for i, method in enumerate(INVENTED_METHODS):
        # Other client-chosen values ride along: a forwarded scheme (uvicorn trusts 127.0.0.1), a Host, a User-Agent.
        headers = {"X-Forwarded-Proto": f"proto{i}", "Host": f"host-{i}.invalid", "User-Agent": f"agent/{i}"}
        requests.append((method, targets[i % len(targets)].format(i=i), headers))
    requests += [
        ("GET", "/users/7", {"X-Forwarded-Proto": "https"}),
        ("POST", "/graph/query", {}),
        ("DELETE", "/users/7", {}),
        ("OPTIONS", "/users/7", {}),
        ("HEAD", "/users/7", {}),
        ("GET", "/nothing/at/all", {}),
    ]
    return requests


def send_one(port: int, method: str, target: str, headers: dict[str, str]) -> bytes:
    """One request, byte for byte as given, on its own connection; everything the server answered."""
    body = b'{"query": "MATCH (n) RETURN n"}' if method == "POST" else b""
    fields = {"Host": "127.0.0.1", "Content-Type": "application/json", **headers}
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    received = b""
    # No half-close after sending (raw_exchange's): h11 would take it for a client gone before the answer.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1") + body)
        while chunk := sock.recv(65536):  # the server closes after its answer (Connection: close)
            received += chunk
    return received


def header_of(answer: bytes, name: bytes) -> str | None:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None


@pytest.mark.parametrize(("server", "http"), METHOD_SERVERS)
def test_invented_methods_are_answered_and_labelled_other(
    server: str, http: str | None, receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    sink = tmp_path / "metrics.jsonl"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OMNII_OBS_METRICS_SINK": str(sink),
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OMNII_OBS_SHUTDOWN_TIMEOUT": "20",
    }
    requests = invented_method_requests()
    process = start_server(env, tmp_path, server=server, http=http)
    try:
        answers = [send_one(port_of(process.url), method, target, headers) for method, target, headers in requests]
    finally:
        returncode = process.stop()
    assert returncode in (0, -signal.SIGTERM), process.stderr()[-3000:]
    templates = declared_templates(example_app(ObservabilityConfig()))

    # The server answered every request, and every request reached the app (its answer carries X-Request-ID).
    sent = [(method, target) for method, target, _ in requests]
    statuses = {request: status_of(answer) for request, answer in zip(sent, answers, strict=True)}
    request_ids = [header_of(answer, b"x-request-id") for answer in answers]
    assert all(request_ids), [(m, t[:40]) for (m, t), rid in zip(sent, request_ids, strict=True) if not rid]
    by_id = {rid: method for (method, _), rid in zip(sent, request_ids, strict=True) if rid is not None}
    invented = {rid: method for rid, method in by_id.items() if method not in STANDARD_METHODS}
    standard = {rid: method for rid, method in by_id.items() if method in STANDARD_METHODS}
    assert len(invented) == len(INVENTED_METHODS)
    for (method, target), status in statuses.items():
        if method in STANDARD_METHODS:
            assert status < 500, (method, target, status)
        else:
            assert status in (404, 405), (method, target[:60], status)  # refused by the router, not failed
    assert statuses[("GET", "/users/7")] == 200
    assert statuses[("POST", "/graph/query")] == 200

    # Metric lines: one per request, method only a standard one or _OTHER, route a template or UNMATCHED.
    lines = {line["trace_id"]: line for line in metric_lines(sink) if line["metric"] == "api_latency"}
    assert set(lines) == set(invented) | set(standard)
    assert {lines[rid]["method"] for rid in invented} == {"_OTHER"}
    assert all(lines[rid]["method"] == method for rid, method in standard.items())
    methods = {line["method"] for line in lines.values()}
    assert methods <= set(STANDARD_METHODS) | {"_OTHER"}
    assert len(methods) <= len(STANDARD_METHODS) + 1
    assert {line["route"] for line in lines.values()} <= templates | {UNMATCHED}

    # Spans: "HTTP" (or "HTTP <route>") for invented methods, the method as _OTHER and the original kept aside.
    spans = {s.trace_id: s for s in receiver.wait_for_spans(len(requests), timeout=30) if s.kind == "server"}
    assert set(spans) == set(lines)
    for rid, method in invented.items():
        span = spans[rid]
        route = span.attributes.get("http.route")
        assert span.name == ("HTTP" if route is None else f"HTTP {route}"), (method[:20], span.name)
        assert route is None or route in templates
        assert span.attributes["http.request.method"] == "_OTHER"
        original = span.attributes["http.request.method_original"]
        if len(method) <= 64:
            assert original == method
        else:  # a very long token may be cut, never replaced
            assert original
            assert method.startswith(original), original
    for rid, method in standard.items():
        span = spans[rid]
        route = span.attributes.get("http.route")
        assert span.name == (method if route is None else f"{method} {route}"), span.name
        assert route is None or route in templates
        assert span.attributes["http.request.method"] == method
        assert "http.request.method_original" not in span.attributes
    names = {s.name for s in spans.values()}
    assert names <= {"HTTP", *STANDARD_METHODS} | {f"{m} {t}" for m in ("HTTP", *STANDARD_METHODS) for t in templates}

    # OTLP duration points: the same bounded method and route labels; a forged scheme is not a label.
    points = receiver.wait_for_metric("http.server.request.duration", timeout=30)
    assert {p.attributes["http.request.method"] for p in points} <= set(STANDARD_METHODS) | {"_OTHER"}
    assert "_OTHER" in {p.attributes["http.request.method"] for p in points}
    assert {p.attributes["http.route"] for p in points} <= templates | {UNMATCHED}
    assert {p.attributes["url.scheme"] for p in points} <= {"http", "https"}
    assert "observing a request failed" not in process.stderr()
    assert "Traceback" not in process.stderr()
