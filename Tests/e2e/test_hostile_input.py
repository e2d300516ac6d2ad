"""Hostile input against the real binary over TLS (DESIGN.md §3 "Transport": bounded
everything, `Content-Length` + `Transfer-Encoding` refused, redirects not followed).

- Request smuggling on `/v1/chat/completions` and `GET /api/health`: every request carries a
  hidden inner `POST /v1/chat/completions` whose model is a fresh marker; the fake provider
  echoes the model, so the inner request must never reach the provider nor be answered.
  Contract: a well-formed `400` (or nothing) and the connection closed.
- A body that is framed correctly but *contains* a request stays a body.
- `413` from `Content-Length` alone, before the body is read.
- Deep JSON nesting, provider `base_url` validation, provider redirects (to a canary server),
  header bombs, slowloris and `--max-connections`.

Byte-exact requests go through ``ghtest.RawTLS`` / ``ghtest.raw_exchange``; every read has a
timeout, so a server that does not answer fails a test instead of hanging it.
"""

from __future__ import annotations

import json
import secrets
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import fake_upstream as fu
from fake_upstream import FakeUpstream
from ghtest import (BAD_INPUT, REGISTRY, REQUEST_ID_HEADER, RawTLS, assert_error, assert_no_secret,
                    assert_openai_error, parse_responses, poll_until, raw_exchange, tls_client_context)

CHAT = "/v1/chat/completions"
HEALTH = "/api/health"
# How long the server may take to close a connection it refuses.
CLOSE_WAIT = 2.0
HEALTH_REQUEST = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

pytestmark = pytest.mark.usefixtures("upstream_stays_clean")


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def canary():
    """A second fake server: the target of the provider's redirects. It must see nothing."""
    c = FakeUpstream().start()
    yield c
    c.stop()


class Keys:
    def __init__(self, inst, upstream):
        self.provider, self.provider_secret = inst.create_provider_key(
            name="hostile-openai", provider="openai", base_url=upstream.base_url)
        px = inst.create_proxy_key(self.provider["id"], name="hostile")
        REGISTRY.add_gatehouse_key(px["key"], "proxy key (test_hostile_input)")
        self.proxy = px["key"]
        self.auth = {"Authorization": f"Bearer {self.proxy}"}


@pytest.fixture(scope="module")
def keys(inst, upstream) -> Keys:
    return Keys(inst, upstream)


def assert_healthy(inst) -> None:
    r = requests.get(inst.base_url + HEALTH, verify=inst.verify, timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}, f"health after the attack: {r.status_code} {r.text}"


def chat_ok(inst, keys) -> requests.Response:
    r = requests.post(inst.base_url + CHAT, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                      headers=keys.auth, verify=inst.verify, timeout=10)
    assert r.status_code == 200, f"a normal chat completion after the attack: {r.status_code} {r.text[:300]}"
    return r


# --------------------------------------------------------------------------------------------
# 1. Request smuggling
# --------------------------------------------------------------------------------------------

OUTER_BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "outer"}]}).encode()


def chunked(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"


def inner_request(key: str, marker: str) -> bytes:
    """The smuggled request: a complete, valid chat completion whose model is `marker`."""
    body = json.dumps({"model": marker, "messages": [{"role": "user", "content": "smuggled"}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + key.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def outer_request(route: str, key: str, headers: list, payload: bytes) -> bytes:
    if route == CHAT:
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + key.encode()
                + b"\r\nContent-Type: application/json\r\n")
    else:
        head = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + payload


# case -> f(outer body, inner request) -> (extra header lines, bytes after the head)
TE = b"Transfer-Encoding: chunked"
SMUGGLING = {
    # (a) both framings: CL says the inner request is body, chunked says it is the next request
    "cl_then_te": lambda b, i: ([b"Content-Length: %d" % (5 + len(i)), TE], b"0\r\n\r\n" + i),
    # ... and the other way round: CL ends right where the inner request starts
    "te_then_cl": lambda b, i: ([TE, b"Content-Length: %d" % len(b"%x\r\n" % len(i))], chunked(i)),
    # (b) two different Content-Lengths
    "two_cl_different": lambda b, i: ([b"Content-Length: %d" % len(b), b"Content-Length: %d" % (len(b) + len(i))], b + i),
    # (c) two identical Content-Lengths, and the list form
    "two_cl_same": lambda b, i: ([b"Content-Length: %d" % len(b), b"Content-Length: %d" % len(b)], b + i),
    "cl_list_same": lambda b, i: ([b"Content-Length: %d, %d" % (len(b), len(b))], b + i),
    # (d) invalid chunked encoding, the inner request right after
    "chunk_bad_hex": lambda b, i: ([TE], b"zz\r\n" + b + b"\r\n0\r\n\r\n" + i),
    "chunk_missing_crlf": lambda b, i: ([TE], b"%x\r\n" % len(b) + b + b"0\r\n\r\n" + i),
    "chunk_size_overflow": lambda b, i: ([TE], b"ffffffffffffffffff\r\n" + b + b"\r\n0\r\n\r\n" + i),
    # (e) obfuscated Transfer-Encoding
    "te_chunked_identity": lambda b, i: ([b"Transfer-Encoding: chunked, identity"], chunked(b) + i),
    "te_space_before_colon": lambda b, i: ([b"Transfer-Encoding : chunked"], chunked(b) + i),
    "te_xchunked": lambda b, i: ([b"Transfer-Encoding: xchunked"], chunked(b) + i),
    "te_twice": lambda b, i: ([TE, b"Transfer-Encoding: identity"], chunked(b) + i),
    "te_obs_fold": lambda b, i: ([b"Transfer-Encoding:", b" chunked"], chunked(b) + i),
}

# Body-framing errors found only while the body is read: a route that answers without reading
# its body (GET /api/health) has already answered by then; what follows is NIO's 400 and the
# close. The inner request still never runs.
BODY_FRAMING_CASES = ("chunk_bad_hex", "chunk_missing_crlf", "chunk_size_overflow", "te_xchunked")


def smuggle(inst, keys, upstream, route: str, case: str):
    marker = f"smuggled-{secrets.token_hex(6)}"
    headers, payload = SMUGGLING[case](OUTER_BODY, inner_request(keys.proxy, marker))
    n0 = upstream.count()
    reply = raw_exchange(inst, outer_request(route, keys.proxy, headers, payload), timeout=CLOSE_WAIT)
    time.sleep(0.1)  # a request forwarded at the last moment still lands
    return reply, marker, upstream.since(n0)


@pytest.mark.parametrize("case", list(SMUGGLING))
@pytest.mark.parametrize("route", [CHAT, HEALTH])
def test_smuggled_request_never_runs(inst, keys, upstream, route, case):
    """Whatever the answer, the inner request is never forwarded nor answered, nothing gets a
    5xx, and the connection does not stay open for more."""
    reply, marker, calls = smuggle(inst, keys, upstream, route, case)
    assert not [c for c in calls if marker.encode() in c.body], (
        f"the smuggled request reached the provider: {[(c.method, c.path, c.model) for c in calls]}")
    assert marker.encode() not in reply.data, f"the smuggled request was answered: {reply.describe()}"
    responses, _ = parse_responses(reply.data)
    assert all(r.status_code < 500 for r in responses), f"5xx for a malformed request: {reply.describe()}"
    assert reply.closed, f"the connection stayed open after a malformed request: {reply.describe()}"
    assert_no_secret(reply.data, f"reply to {case}")
    assert_healthy(inst)


@pytest.mark.parametrize("route,case", [(route, case) for route in (CHAT, HEALTH) for case in SMUGGLING])
def test_smuggling_is_400_then_close(inst, keys, upstream, route, case):
    """The strict contract: nothing forwarded; if any bytes, exactly one well-formed
    `HTTP/1.1 400`; then the connection is closed. (A body-less route that answered before
    its broken body was parsed: its own answer, then the 400.)"""
    reply, _, calls = smuggle(inst, keys, upstream, route, case)
    assert calls == [], f"forwarded to the provider: {[(c.method, c.path, c.model) for c in calls]}"
    if reply.data:
        responses, rest = parse_responses(reply.data)
        assert rest == b"", f"not well-formed HTTP/1.1: {reply.describe()}"
        allowed = ([400], [200, 400]) if route == HEALTH and case in BODY_FRAMING_CASES else ([400],)
        assert [r.status_code for r in responses] in allowed, f"expected one 400: {reply.describe()}"
        if route == CHAT:
            assert reply.data.startswith(b"HTTP/1.1 400 "), reply.describe()
    assert reply.closed, f"the connection was not closed: {reply.describe()}"


# (f) A request inside a correctly framed body is data, not a request.
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("route", [CHAT, HEALTH])
def test_request_inside_a_body_stays_a_body(inst, keys, upstream, route, framing):
    marker = f"smuggled-{secrets.token_hex(6)}"
    inner = inner_request(keys.proxy, marker)
    if framing == "chunked":
        headers, payload = [TE], chunked(inner)
    else:
        headers, payload = [b"Content-Length: %d" % len(inner)], inner
    n0 = upstream.count()
    with RawTLS(inst) as c:
        c.send(outer_request(route, keys.proxy, headers, payload))
        [r] = c.responses(1, timeout=10)
        if route == CHAT:
            assert_openai_error(r, 400)  # the body is not JSON
        else:
            assert r.status_code == 200 and r.json() == {"status": "ok"}, (r.status_code, r.content[:200])
        # The connection is still in step: the next request gets its own answer, and only that.
        c.send(HEALTH_REQUEST)
        [h] = c.responses(1, timeout=10)
        assert h.status_code == 200 and h.json() == {"status": "ok"}, (h.status_code, h.content[:200])
        extra = c.read_until_close(0.3)
        assert extra.data == b"", f"an extra answer arrived: {extra.describe()}"
        assert marker.encode() not in r.content + h.content
    time.sleep(0.1)
    calls = upstream.since(n0)
    assert calls == [], f"forwarded to the provider: {[(x.method, x.path, x.model) for x in calls]}"


# --------------------------------------------------------------------------------------------
# 2. 413 from Content-Length alone
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route,declared", [
    (CHAT, 100_000_000), (CHAT, 32 * 1024 * 1024 + 1),
    ("/api/provider-keys", 100_000_000), ("/api/provider-keys", 64 * 1024 + 1),
])
def test_oversized_content_length_is_413_before_the_body(inst, keys, upstream, route, declared):
    marker = f"echo-me-{secrets.token_hex(6)}"
    key = keys.proxy if route == CHAT else inst.owner_key
    head = (f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n").encode()
    start = ('{"model":"' + marker + '","name":"' + marker + '","messages":[{"role":"user","content":"').encode()
    n0 = upstream.count()
    with RawTLS(inst) as c:
        t0 = time.monotonic()
        c.send(head + start + b"a" * 4096)  # a few KB of a body declared much larger
        try:
            [r] = c.responses(1, timeout=2.0)
        except AssertionError as e:
            pytest.fail(f"no response within 2 s to Content-Length {declared} with 4 KB sent: {e}")
        elapsed = time.monotonic() - t0
    assert r.status_code == 413, f"expected 413, got {r.status_code}: {r.content[:300]!r}"
    assert elapsed < 2.0
    if route == CHAT:
        assert_openai_error(r, 413)
    else:
        err = r.json()["error"]
        assert err.get("type") == "payload_too_large" and err.get("message"), r.content
        assert err.get("request_id") == r.headers.get(REQUEST_ID_HEADER), r.content
    assert marker.encode() not in r.content, "the error echoes the request body"
    assert upstream.count() == n0
    assert_healthy(inst)


# --------------------------------------------------------------------------------------------
# 3. Deep JSON
# --------------------------------------------------------------------------------------------

DEPTH = 100_000


@pytest.mark.parametrize("shape", ["bare", "in_messages"])
def test_deep_json_on_the_gateway_is_400_fast(inst, keys, upstream, shape):
    deep = b"[" * DEPTH + b"]" * DEPTH
    body = deep if shape == "bare" else b'{"model":"gpt-4o-mini","messages":' + deep + b"}"
    n0 = upstream.count()
    times = []
    for _ in range(2):  # the better of two, against scheduling noise
        t0 = time.monotonic()
        r = requests.post(inst.base_url + CHAT, data=body, headers={**keys.auth, "Content-Type": "application/json"},
                          verify=inst.verify, timeout=10)
        times.append(time.monotonic() - t0)
        assert_openai_error(r, 400)
    assert min(times) < 1.0, f"{DEPTH}-deep JSON took {min(times):.2f}s to refuse"
    assert upstream.count() == n0, "deeply nested JSON was forwarded"
    assert_healthy(inst)
    chat_ok(inst, keys)


@pytest.mark.parametrize("depth", [30_000, DEPTH])
def test_deep_json_on_the_admin_api_is_refused_fast(inst, depth):
    """30 000 levels fit in the 64 KiB admin body limit (400: nesting); 100 000 do not (400 or 413)."""
    body = b'{"name":' + b"[" * depth + b"]" * depth + b"}"
    t0 = time.monotonic()
    r = inst.api("POST", "/api/provider-keys", data=body, headers={"Content-Type": "application/json"}, timeout=10)
    elapsed = time.monotonic() - t0
    if len(body) <= 64 * 1024:
        assert_error(r, 400, "invalid_request")
    else:
        assert_error(r, (400, 413), {400: "invalid_request", 413: "payload_too_large"})
    assert elapsed < 1.0, f"{depth}-deep JSON took {elapsed:.2f}s to refuse"
    assert_healthy(inst)
    assert inst.api("GET", "/api/provider-keys").status_code == 200


# --------------------------------------------------------------------------------------------
# 4. Provider base_url validation
# --------------------------------------------------------------------------------------------

URL_PASSWORD = "pw" + secrets.token_hex(10)
REGISTRY.add_canary(URL_PASSWORD, "provider", "password inside a rejected base_url")


@pytest.mark.parametrize("base_url", [
    pytest.param("ftp://x", id="ftp"),
    pytest.param("file:///etc/passwd", id="file"),
    pytest.param("javascript:alert(1)", id="javascript"),
    pytest.param("http://user:pass@host/", id="user-pass"),
    pytest.param(f"https://admin:{URL_PASSWORD}@api.example.com/v1", id="user-secret-password"),
    pytest.param(f"https://:{URL_PASSWORD}@api.example.com/", id="password-only"),
    pytest.param("http://user@host/", id="user-only"),
    pytest.param("https://host/#frag", id="fragment"),
    pytest.param("https://host/?q=1", id="query"),
    pytest.param("", id="empty"),
    pytest.param("http://", id="no-host"),
    pytest.param("//host/path", id="scheme-relative"),
    pytest.param("http://" + "a" * 5000 + ".example.com/", id="very-long-host"),
    pytest.param("https://api.example.com/" + "p" * 5000, id="very-long-path"),
    pytest.param("http://host with space/", id="space-in-host"),
    pytest.param(" http://host/", id="leading-space"),
    pytest.param("http://host\n/", id="newline-in-host"),
    pytest.param("http://ho\rst/", id="cr-in-host"),
    pytest.param("http://host\\@evil.example/", id="backslash-userinfo"),
    pytest.param("http://host/a b", id="space-in-path"),
    pytest.param("http://host/ ", id="trailing-space"),
    pytest.param("http://host/\ta", id="tab-in-path"),
    pytest.param("http://host/\nfoo", id="newline-in-path"),
    pytest.param("http://host/\r\nX-Injected: 1", id="crlf-header-injection"),
    pytest.param("https://h/a\r\nHost: evil.example", id="crlf-host-injection"),
    # Percent-encoded hosts: URLComponents decodes them, so an encoded CR/LF, NUL, space or
    # non-ASCII byte would reach the Host header and the resolver as it is.
    pytest.param("http://a%0d%0aX-Injected:%20yes%0d%0a.example/", id="encoded-crlf-in-host"),
    pytest.param("http://a%00b.example/", id="encoded-nul-in-host"),
    pytest.param("http://a%20b.example/", id="encoded-space-in-host"),
    pytest.param("http://%C3%A4.example/", id="encoded-non-ascii-host"),
    pytest.param("http://ex%61mple.com/", id="encoded-letter-in-host"),
    pytest.param("http://host:99999/", id="port-out-of-range"),
    pytest.param("http://host:0/", id="port-zero"),
])
def test_bad_base_url_is_refused(inst, base_url):
    name = f"bad-base-url-{secrets.token_hex(4)}"
    r = inst.api("POST", "/api/provider-keys",
                 json={"name": name, "provider": "openai-compatible", "base_url": base_url, "api_key": "sk-" + "x" * 20})
    err = assert_error(r, (400, 422), BAD_INPUT)
    assert "base_url" in err["message"], f"the error does not name base_url: {err}"
    assert b"user:pass" not in r.content and URL_PASSWORD.encode() not in r.content, f"credential echoed: {r.text}"
    if len(base_url) > 100:
        assert base_url[7:107].encode() not in r.content, "the error echoes the (very long) value"
    listed = inst.api("GET", "/api/provider-keys").json()["data"]
    assert name not in [o["name"] for o in listed], "a refused provider key was stored anyway"


# --------------------------------------------------------------------------------------------
# 5. Provider redirects are not followed
# --------------------------------------------------------------------------------------------


@pytest.fixture
def redirect_to_canary(upstream, canary):
    upstream.redirect_location = f"{canary.base_url}/steal"
    yield
    upstream.redirect_location = None


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_provider_redirect_is_not_followed(inst, keys, upstream, canary, redirect_to_canary, code):
    model = f"{fu.REDIRECT_MODEL_PREFIX}{code}"
    n0 = upstream.count()
    r = requests.post(inst.base_url + CHAT, json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                      headers=keys.auth, verify=inst.verify, timeout=10, allow_redirects=False)
    assert r.status_code == code or 500 <= r.status_code < 600, f"expected the {code} or an error, got {r.status_code}"
    raw_headers = "\r\n".join(f"{k}: {v}" for k, v in r.headers.items()).encode()
    assert_no_secret(r.content + raw_headers, f"{code} response")
    time.sleep(0.3)
    assert canary.connections == 0, f"the gateway connected to the redirect target ({canary.connections} connections)"
    assert canary.count() == 0, f"the redirect target was requested: {[(c.method, c.path) for c in canary.requests]}"
    calls = upstream.since(n0)
    assert [c.model for c in calls] == [model], f"provider calls: {[(c.path, c.model) for c in calls]}"


# (g) Header fields that are not valid HTTP: the gateway forwards the client's fields as NIO's
# parser (llhttp, strict) accepted them, so a field the parser let through with a control
# character or a non-token name would reach the provider as it stands. Each must be refused
# before anything is forwarded.
BAD_FIELDS = {
    "nul_in_value": b"X-Note: a\x00b",
    "bare_cr_in_value": b"X-Note: a\rInjected: 1",
    "ctl_in_value": b"X-Note: a\x01b",
    "del_in_value": b"X-Note: a\x7fb",
    "esc_in_value": b"X-Note: a\x1bb",
    "space_in_name": b"X Note: v",
    "slash_in_name": b"X/Note: v",
    "non_ascii_name": b"X-N\xc3\xb6te: v",
    "empty_name": b": v",
}


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_invalid_header_fields_are_refused_before_forwarding(inst, keys, upstream, case):
    n0 = upstream.count()
    body = OUTER_BODY
    request = outer_request(CHAT, keys.proxy, [BAD_FIELDS[case], b"Content-Length: %d" % len(body)], body)
    reply = raw_exchange(inst, request, timeout=CLOSE_WAIT)
    time.sleep(0.1)
    calls = upstream.since(n0)
    assert calls == [], f"forwarded with {case}: {[c.headers for c in calls]}"
    responses, rest = parse_responses(reply.data)
    assert [r.status_code for r in responses] in ([], [400]), f"expected a 400 or nothing: {reply.describe()}"
    assert reply.closed, f"the connection stayed open: {reply.describe()}"


def test_a_valid_extra_header_field_is_forwarded_as_sent(inst, keys, upstream):
    """The control for the test above: the same request with a valid field reaches the
    provider, with the field as the client wrote it (obs-text and tabs included)."""
    n0 = upstream.count()
    body = OUTER_BODY
    request = outer_request(CHAT, keys.proxy, [b"X-Note: a\tb \xc3\xa9", b"Content-Length: %d" % len(body),
                                               b"Connection: close"], body)
    reply = raw_exchange(inst, request, timeout=CLOSE_WAIT)
    [call] = upstream.since(n0)
    notes = [v for (k, v) in call.headers if k.lower() == "x-note"]
    assert len(notes) == 1 and notes[0].encode("latin-1", "replace")[:4] == b"a\tb ", notes
    assert parse_responses(reply.data)[0][0].status_code == 200, reply.describe()


def test_an_absolute_form_target_is_not_a_gateway_request(inst, keys, upstream):
    """`POST http://host/v1/… HTTP/1.1` (proxy form): the gateway serves origin-form targets
    only, so this goes to the router, is answered there, and nothing reaches a provider."""
    n0 = upstream.count()
    body = OUTER_BODY
    request = (b"POST http://127.0.0.1/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
               + keys.proxy.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    with RawTLS(inst) as c:
        c.send(request)
        [r] = c.responses(1, timeout=5)
    assert r.status_code == 404, f"{r.status_code}: {r.content[:300]!r}"
    assert upstream.since(n0) == []
    assert_no_secret(r.content, "absolute-form answer")


# --------------------------------------------------------------------------------------------
# 6. Header bombs
# --------------------------------------------------------------------------------------------

BOMBS = {
    "one_100kb_header": [b"X-Big: " + b"a" * 100_000],
    "2000_small_headers": [b"X-H%d: v" % i for i in range(2000)],
}


@pytest.mark.parametrize("bomb", list(BOMBS))
@pytest.mark.parametrize("route", [HEALTH, "/v1/models"])
def test_header_bomb_is_4xx_or_close(inst, keys, upstream, route, bomb):
    auth = [b"Authorization: Bearer " + keys.proxy.encode()] if route.startswith("/v1") else []
    data = f"GET {route} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + b"".join(h + b"\r\n" for h in auth + BOMBS[bomb]) + b"\r\n"
    n0 = upstream.count()
    reply = raw_exchange(inst, data, timeout=5.0)
    responses, rest = parse_responses(reply.data)
    assert rest == b"", f"not well-formed HTTP/1.1: {reply.describe()}"
    statuses = [r.status_code for r in responses]
    assert statuses in ([], [400], [431]), f"expected one 400/431 or nothing: {reply.describe()}"
    assert reply.closed, f"the connection was not closed: {reply.describe()}"
    assert upstream.count() == n0, "a header bomb was forwarded"
    assert_healthy(inst)


# --------------------------------------------------------------------------------------------
# 7. Slowloris and --max-connections (new `serve` flags)
# --------------------------------------------------------------------------------------------

HEADER_TIMEOUT = 2.0
CLOSE_SLACK = 2.5
SLOW_CONNECTIONS = 300
# A request head that never ends: one byte of it every TRICKLE_EVERY seconds.
SLOW_HEAD = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
TRICKLE_EVERY = 0.5


class _Slow:
    def __init__(self, sock: ssl.SSLSocket):
        self.sock = sock
        self.first_byte_at = 0.0
        self.sent = 0
        self.closed_at = None
        self.how = ""
        self.data = b""


def _open_tls(inst, ctx) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", inst.port), timeout=10)
    try:
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


def _trickle(conns: list, stop: threading.Event) -> None:
    """Sends one more byte to every open connection every TRICKLE_EVERY seconds and notes when
    (and how) the server closes each one; polls for closes every 50 ms."""
    sel = selectors.DefaultSelector()
    for c in conns:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    next_send = time.monotonic() + TRICKLE_EVERY
    while not stop.is_set() and sel.get_map():
        for key, _ in sel.select(timeout=0.05):
            c = key.data
            try:
                chunk = c.sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue  # a TLS record without application data (e.g. a session ticket)
            except (OSError, ssl.SSLError) as e:
                chunk, c.how = b"", f"reset: {e!r}"
            if chunk:
                c.data += chunk
                continue
            c.closed_at, c.how = time.monotonic(), c.how or "eof"
            sel.unregister(c.sock)
        if time.monotonic() >= next_send:
            next_send += TRICKLE_EVERY
            for key in list(sel.get_map().values()):
                c = key.data
                try:
                    c.sent += c.sock.send(SLOW_HEAD[c.sent:c.sent + 1])
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
                except (OSError, ssl.SSLError) as e:
                    c.closed_at, c.how = time.monotonic(), f"send failed: {e!r}"
                    sel.unregister(c.sock)
    sel.close()


def _timed(fn) -> tuple[float, object]:
    t0 = time.monotonic()
    out = fn()
    return time.monotonic() - t0, out


def test_slowloris_connections_do_not_starve_real_clients(gatehouse, upstream):
    g = gatehouse(True, "--header-timeout", str(HEADER_TIMEOUT), "--idle-timeout", "5")
    pk, _ = g.create_provider_key(name="slowloris-openai", provider="openai", base_url=upstream.base_url)
    px = g.create_proxy_key(pk["id"], name="slowloris")
    REGISTRY.add_gatehouse_key(px["key"], "proxy key (slowloris)")
    ctx = tls_client_context(g)
    conns: list[_Slow] = []
    stop = threading.Event()
    trickler = None
    try:
        # Complete 300 handshakes first, then start every request head at (nearly) the same time.
        with ThreadPoolExecutor(32) as ex:
            futures = [ex.submit(_open_tls, g, ctx) for _ in range(SLOW_CONNECTIONS)]
            errors = []
            for f in futures:
                try:
                    conns.append(_Slow(f.result()))
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))
        assert not errors, f"{len(errors)} of {SLOW_CONNECTIONS} handshakes failed, e.g. {errors[:3]}"
        for c in conns:
            c.sock.sendall(SLOW_HEAD[:1])
            c.sent, c.first_byte_at = 1, time.monotonic()
        trickler = threading.Thread(target=_trickle, args=(conns, stop), name="slowloris", daemon=True)
        trickler.start()

        # Meanwhile, real clients (each on a new connection) are answered promptly.
        with requests.Session() as s:
            t, r = _timed(lambda: s.get(g.base_url + HEALTH, verify=g.verify, timeout=5))
            assert r.status_code == 200 and t < 1.0, f"health during slowloris: {r.status_code} after {t:.2f}s"
        with requests.Session() as s:
            t, r = _timed(lambda: s.post(g.base_url + CHAT, verify=g.verify, timeout=5,
                                         headers={"Authorization": f"Bearer {px['key']}"},
                                         json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            assert r.status_code == 200 and t < 1.0, f"chat during slowloris: {r.status_code} after {t:.2f}s"
        still_open = sum(c.closed_at is None for c in conns)
        assert still_open >= SLOW_CONNECTIONS // 2, f"test premise: only {still_open} slow connections were open"

        # Every slow connection is closed by the header timeout (408 first, or a plain close).
        limit = HEADER_TIMEOUT + CLOSE_SLACK
        last_first_byte = max(c.first_byte_at for c in conns)
        poll_until(lambda: all(c.closed_at is not None for c in conns), timeout=last_first_byte + limit - time.monotonic())
        stop.set()
        trickler.join(5)
        open_ones = [c for c in conns if c.closed_at is None]
        assert not open_ones, (f"{len(open_ones)} of {SLOW_CONNECTIONS} slowloris connections still open "
                               f"{limit}s after their first byte (sent {open_ones[0].sent} bytes each)")
        late = [c for c in conns if c.closed_at - c.first_byte_at > limit]
        assert not late, f"{len(late)} connections closed later than {limit}s, e.g. after {late[0].closed_at - late[0].first_byte_at:.2f}s"
        for c in conns:
            if c.data:
                responses, rest = parse_responses(c.data)
                assert rest == b"" and [x.status_code for x in responses] == [408], (
                    f"a slow connection got something other than one 408 before the close: {c.data[:200]!r}")
    finally:
        stop.set()
        if trickler:
            trickler.join(5)
        for c in conns:
            c.sock.close()
    assert_healthy(g)


def _refused_at_once(inst) -> tuple[bool, str]:
    """Whether a new connection is closed right away: the handshake fails, or the first request
    gets EOF with no answer, within CLOSE_WAIT seconds."""
    try:
        c = RawTLS(inst, timeout=CLOSE_WAIT)
    except TimeoutError:
        return False, f"the handshake hung for {CLOSE_WAIT}s"
    except (ssl.SSLError, OSError) as e:
        return True, f"handshake failed: {e!r}"
    with c:
        try:
            c.send(HEALTH_REQUEST)
        except (ssl.SSLError, OSError) as e:
            return True, f"send failed: {e!r}"
        reply = c.read_until_close(CLOSE_WAIT)
    return (reply.closed and not reply.data), reply.describe()


def _health_on_new_connection(inst) -> bool:
    try:
        with RawTLS(inst, timeout=2) as c:
            c.send(HEALTH_REQUEST)
            [r] = c.responses(1, timeout=2)
            return r.status_code == 200
    except (AssertionError, OSError, ssl.SSLError):
        return False


def test_max_connections(gatehouse):
    g = gatehouse(True, "--max-connections", "20")
    held: list[RawTLS] = []
    try:
        for _ in range(20):
            held.append(RawTLS(g, timeout=5))
        refused, how = _refused_at_once(g)
        assert refused, f"the 21st connection was not closed right away: {how}"
        # The 20 stay usable (keep-alive requests on each).
        for c in held:
            c.send(HEALTH_REQUEST)
            [r] = c.responses(1, timeout=5)
            assert r.status_code == 200, r.content[:200]
        # After closing some, new connections are accepted again.
        for c in held[:5]:
            c.close()
        del held[:5]
        assert poll_until(lambda: _health_on_new_connection(g), timeout=3, interval=0.1) is not None, (
            "no new connection accepted after 5 of the 20 were closed")
        for c in held:
            c.send(HEALTH_REQUEST)
            [r] = c.responses(1, timeout=5)
            assert r.status_code == 200
    finally:
        for c in held:
            c.close()


# --------------------------------------------------------------------------------------------
# Secret hygiene: a provider that echoes the credential it was sent
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["requests", "openai-sdk"])
def test_provider_key_echoed_by_the_upstream_never_reaches_the_client(inst, keys, upstream, via):
    """The provider key is the one secret a proxy-key holder must never learn. A provider (or
    anything at its address) that quotes the credential in an error body gets it scrubbed."""
    secret = keys.provider_secret
    if via == "requests":
        r = requests.post(inst.base_url + CHAT, headers=keys.auth, verify=inst.verify, timeout=10,
                          json={"model": "echo-key-model", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 401, (r.status_code, r.text[:300])
        body = r.content
        assert "content-length" not in {k.lower() for k in r.headers} or int(r.headers["content-length"]) == len(body)
    else:
        import openai
        client = openai.OpenAI(api_key=keys.proxy, base_url=inst.base_url + "/v1",
                               http_client=__import__("httpx").Client(verify=str(inst.cert_path)))
        with pytest.raises(openai.AuthenticationError) as info:
            client.chat.completions.create(model="echo-key-model", messages=[{"role": "user", "content": "hi"}])
        body = info.value.response.content
    assert b"[redacted]" in body, body[:400]
    assert_no_secret(body, "upstream error body relayed to the client")
    assert secret.encode() not in body
    assert upstream.requests[-1].credential == secret, "the upstream did get the real key (the premise)"


def test_json_depth_limit_is_configurable(gatehouse, upstream):
    g = gatehouse(True, "--max-json-depth", "4")
    pk, _ = g.create_provider_key(name="depth-openai", provider="openai", base_url=upstream.base_url)
    px = g.create_proxy_key(pk["id"], name="depth")
    REGISTRY.add_gatehouse_key(px["key"], "proxy key (json depth)")
    auth = {"Authorization": f"Bearer {px['key']}"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "x": [[1]]}  # depth 3
    r = requests.post(g.base_url + CHAT, json=body, headers=auth, verify=g.verify, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    body["x"] = [[[[1]]]]  # depth 5
    r = requests.post(g.base_url + CHAT, json=body, headers=auth, verify=g.verify, timeout=10)
    assert_openai_error(r, 400)
    assert "nested too deeply" in r.json()["error"]["message"]


def test_body_of_a_refused_request_is_dropped_within_the_body_limit(gatehouse):
    """A gateway request refused at its head (here: a bad key) is answered at once. A small body
    is then read and dropped and the connection stays usable; a body that goes on past
    --max-body-bytes gets the connection closed instead of being read for ever."""
    g = gatehouse(True, "--max-body-bytes", "4096")
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer gate_not_a_key\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    with RawTLS(g) as c:
        c.send(head + chunked(b"{}"))
        [refused] = c.responses(1, timeout=5)
        assert refused.status_code == 401, refused.text
        c.send(HEALTH_REQUEST)
        [health] = c.responses(1, timeout=5)
        assert health.status_code == 200, "the connection was not usable after a refused request with a small body"
    with RawTLS(g) as c:
        c.send(head)
        [refused] = c.responses(1, timeout=5)
        assert refused.status_code == 401, refused.text
        piece = b"%x\r\n" % 1024 + b"x" * 1024 + b"\r\n"
        try:
            for _ in range(64):  # 64 KiB, 16 times the limit, never terminated
                c.send(piece)
                time.sleep(0.005)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        reply = c.read_until_close(CLOSE_WAIT)
        assert reply.closed, f"still open after 16 times the body limit: {reply.describe()}"
