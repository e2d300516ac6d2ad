"""The data plane (/v1/*) end to end: a real `gatehouse serve` over TLS in front of a local fake
provider (fake_upstream.py), driven through the official `openai` and `anthropic` SDKs and raw
HTTP. Covers forwarding and streaming, usage/cost in the request log, /api/requests and
/api/usage, proxy-key authentication and authorisation, error handling, unbuffered streaming
and client disconnects. The fake provider checks on every request that it got the provider
key and never a Gatehouse key (`gate_`).
"""

from __future__ import annotations

import json
import secrets
import signal
import ssl
import time
import uuid
from datetime import datetime, timedelta, timezone

import anthropic
import openai
import openai._base_client as _openai_base
import pytest
import requests

import fake_upstream as fu
from ghtest import (REGISTRY, REQUEST_ID_HEADER, RawTLS, assert_no_secret, assert_one_error_line, assert_openai_error, free_port,
                    poll_until, tamper_key, write_self_signed)

# The HTTP client module the SDKs are built on (`httpx`, or `httpx2` in newer SDK releases):
# the SDKs only accept an `http_client` of their own module's Client class.
httpx = getattr(_openai_base, "httpx2", None) or getattr(_openai_base, "httpx")

OVERHEAD_HEADER = "Gatehouse-Overhead-Ms"
PRICED_OPENAI = "gpt-4o-mini"
PRICED_ANTHROPIC = "claude-3-5-haiku-20241022"
EMBEDDING_MODEL = "text-embedding-3-small"
UNKNOWN_MODEL = "fake-unknown-model-x1"
LOG_TIMEOUT = 6.0  # the log writer flushes every ~50 ms
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}]

pytestmark = pytest.mark.usefixtures("upstream_stays_clean")


def msgs(text: str = "hello") -> list:
    return [{"role": "user", "content": text}]


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(inst) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(inst.cert_path or inst.verify))


class Keys:
    def __init__(self, inst, upstream):
        self.inst = inst
        self.openai, self.openai_secret = inst.create_provider_key(
            name="fake-openai", provider="openai", base_url=upstream.base_url)
        self.anthropic, self.anthropic_secret = inst.create_provider_key(
            name="fake-anthropic", provider="anthropic", base_url=upstream.base_url)
        self.dead, self.dead_secret = inst.create_provider_key(
            name="closed-port", provider="openai", base_url=f"http://127.0.0.1:{free_port()}")
        # Provider keys a test adds for itself: their secrets may reach the provider too.
        self.more_secrets: set[str] = set()

    def proxy(self, provider: str = "openai", **fields) -> dict:
        pk = {"openai": self.openai, "anthropic": self.anthropic, "dead": self.dead}[provider]
        obj = self.inst.create_proxy_key(pk["id"], name=f"px-{provider}-{uuid.uuid4().hex[:8]}", **fields)
        REGISTRY.add_gatehouse_key(obj["key"], "proxy key (test_gateway)")
        return obj


@pytest.fixture(scope="module")
def keys(inst, upstream) -> Keys:
    return Keys(inst, upstream)


@pytest.fixture(scope="module")
def http(inst, tls):
    with httpx.Client(base_url=inst.base_url, verify=tls, timeout=30.0) as c:
        yield c


@pytest.fixture
def oa(inst, tls):
    """Factory: an `openai.OpenAI` client for a proxy key, closed after the test."""
    made = []

    def make(key: str) -> openai.OpenAI:
        c = openai.OpenAI(base_url=f"{inst.base_url}/v1", api_key=key, max_retries=0,
                          http_client=httpx.Client(verify=tls, timeout=30.0))
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def an(inst, tls):
    """Factory: an `anthropic.Anthropic` client for a proxy key, closed after the test."""
    made = []

    def make(key: str) -> anthropic.Anthropic:
        c = anthropic.Anthropic(base_url=inst.base_url, api_key=key, max_retries=0,
                                http_client=anthropic.DefaultHttpxClient(verify=tls, timeout=30.0))
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def assert_gateway_headers(headers, where: str) -> None:
    rid = headers.get(REQUEST_ID_HEADER)
    assert rid, f"{where}: no {REQUEST_ID_HEADER} header (headers: {sorted(headers.keys())})"
    oh = headers.get(OVERHEAD_HEADER)
    assert oh is not None, f"{where}: no {OVERHEAD_HEADER} header (headers: {sorted(headers.keys())})"
    assert float(oh) >= 0, f"{where}: bad {OVERHEAD_HEADER}: {oh!r}"


def chat_body(model: str = PRICED_OPENAI, **extra) -> dict:
    return {"model": model, "messages": msgs(), **extra}


def rows_of(inst, proxy_key_id: str) -> list[dict]:
    r = inst.api("GET", f"/api/requests?proxy_key_id={proxy_key_id}&limit=1000")
    assert r.status_code == 200, r.text
    return r.json()["data"]


def wait_rows(inst, proxy_key_id: str, n: int, timeout: float = LOG_TIMEOUT) -> list[dict]:
    """The log rows of a proxy key, once there are at least `n` (oldest first)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = rows_of(inst, proxy_key_id)
        if len(rows) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(rows) >= n, f"expected {n} log rows for proxy key {proxy_key_id} within {timeout}s, got {len(rows)}"
    # Settle: make sure no extra rows arrive (one row per call).
    time.sleep(0.4)
    rows = rows_of(inst, proxy_key_id)
    assert len(rows) == n, f"expected exactly {n} log rows, got {len(rows)}: {[(r['model'], r['status']) for r in rows]}"
    return sorted(rows, key=lambda r: r["started_at"])


def all_rows(inst) -> list[dict]:
    out, cursor = [], None
    while True:
        q = "/api/requests?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        r = inst.api("GET", q)
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["data"]
        cursor = body.get("next_cursor")
        if not cursor:
            return out


def assert_row(row: dict, *, model: str, status: int = 200, prompt=None, completion=None, cached=None,
               priced: bool | None = None, streamed: bool | None = None) -> None:
    assert row["model"] == model, row
    assert row["status"] == status, row
    if prompt is not None:
        assert row["prompt_tokens"] == prompt, f"prompt_tokens {row['prompt_tokens']} != {prompt}: {row}"
    if completion is not None:
        assert row["completion_tokens"] == completion, f"completion_tokens {row['completion_tokens']} != {completion}"
    if cached is not None:
        assert row["cached_tokens"] == cached, f"cached_tokens {row['cached_tokens']} != {cached}"
    if priced is True:
        assert isinstance(row["cost_usd"], (int, float)) and row["cost_usd"] > 0, f"cost_usd should be > 0: {row}"
    elif priced is False:
        assert row["cost_usd"] is None, f"cost_usd should be null for an unknown model: {row}"
    if streamed is not None:
        assert row["streamed"] is streamed, row


OPENAI_USAGE = dict(prompt=fu.OPENAI_PROMPT_TOKENS, completion=fu.OPENAI_COMPLETION_TOKENS,
                    cached=fu.OPENAI_CACHED_TOKENS)
ANTHROPIC_PROMPT = fu.ANTHROPIC_INPUT_TOKENS + fu.ANTHROPIC_CACHE_READ_TOKENS + fu.ANTHROPIC_CACHE_CREATION_TOKENS
ANTHROPIC_USAGE = dict(prompt=ANTHROPIC_PROMPT, completion=fu.ANTHROPIC_OUTPUT_TOKENS,
                       cached=fu.ANTHROPIC_CACHE_READ_TOKENS)


# --------------------------------------------------------------------------------------------
# OpenAI SDK
# --------------------------------------------------------------------------------------------


def test_openai_chat_non_streaming(inst, tls, keys, upstream, oa):
    px = keys.proxy()
    n0 = upstream.count()
    raw = oa(px["key"]).chat.completions.with_raw_response.create(model=PRICED_OPENAI, messages=msgs())
    assert_gateway_headers(raw.headers, "chat completion")
    resp = raw.parse()
    assert resp.choices[0].message.content == fu.OPENAI_TEXT
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == PRICED_OPENAI
    assert resp.usage.prompt_tokens == fu.OPENAI_PROMPT_TOKENS
    assert resp.usage.completion_tokens == fu.OPENAI_COMPLETION_TOKENS
    assert resp.usage.total_tokens == fu.OPENAI_PROMPT_TOKENS + fu.OPENAI_COMPLETION_TOKENS
    assert resp.usage.prompt_tokens_details.cached_tokens == fu.OPENAI_CACHED_TOKENS
    calls = upstream.since(n0)
    assert len(calls) == 1, f"expected one upstream call, got {len(calls)}"
    up = calls[0]
    assert (up.method, up.path) == ("POST", "/v1/chat/completions")
    assert up.credential == keys.openai_secret, "the provider did not receive the provider key"
    assert not up.gate_leaks
    assert up.json["model"] == PRICED_OPENAI and up.json["messages"] == msgs()
    [row] = wait_rows(inst, px["id"], 1)
    assert_row(row, model=PRICED_OPENAI, **OPENAI_USAGE, priced=True, streamed=False)
    assert row["id"] == raw.headers.get(REQUEST_ID_HEADER)


def test_openai_chat_streaming_hides_unrequested_usage_chunk(inst, http, keys, upstream, oa):
    px = keys.proxy()
    stream = oa(px["key"]).chat.completions.create(model=PRICED_OPENAI, messages=msgs(), stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(fu.OPENAI_STREAM_PIECES)
    assert chunks and chunks[-1].choices and chunks[-1].choices[0].finish_reason == "stop"
    empty = [c for c in chunks if not c.choices]
    assert not empty, f"client got {len(empty)} chunk(s) with empty choices although it did not ask for usage"
    with_usage = [c for c in chunks if getattr(c, "usage", None) is not None]
    assert not with_usage, f"client got a usage chunk although it did not ask for usage: {with_usage[0]}"
    [row] = wait_rows(inst, px["id"], 1)
    assert_row(row, model=PRICED_OPENAI, **OPENAI_USAGE, priced=True, streamed=True)
    # The same on the wire: no event with empty choices or a usage object.
    r = http.post("/v1/chat/completions", json=chat_body(stream=True), headers={"Authorization": f"Bearer {px['key']}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text[:300]
    events = [e[len("data: "):] for e in r.text.split("\n\n") if e.startswith("data: ")]
    assert events and events[-1] == "[DONE]", events[-1:]
    for e in events[:-1]:
        obj = json.loads(e)
        assert obj["choices"], f"event with empty choices reached the client: {e}"
        assert obj.get("usage") is None, f"usage reached a client that did not ask for it: {e}"
    wait_rows(inst, px["id"], 2)


def test_openai_chat_streaming_with_include_usage(inst, tls, keys, upstream, oa):
    px = keys.proxy()
    stream = oa(px["key"]).chat.completions.create(
        model=PRICED_OPENAI, messages=msgs(), stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(fu.OPENAI_STREAM_PIECES)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1, f"expected exactly one usage chunk, got {len(usage_chunks)}"
    u = usage_chunks[0]
    assert u is chunks[-1] and u.choices == []
    assert u.usage.prompt_tokens == fu.OPENAI_PROMPT_TOKENS
    assert u.usage.completion_tokens == fu.OPENAI_COMPLETION_TOKENS
    [row] = wait_rows(inst, px["id"], 1)
    assert_row(row, model=PRICED_OPENAI, **OPENAI_USAGE, priced=True, streamed=True)


def test_openai_tool_calls_non_streaming(inst, tls, keys, upstream, oa):
    px = keys.proxy()
    n0 = upstream.count()
    resp = oa(px["key"]).chat.completions.create(model=PRICED_OPENAI, messages=msgs("weather?"),
                                                            tools=TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id == fu.TOOL_CALL_ID and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    [up] = upstream.since(n0)
    assert up.json["tools"] == TOOLS, "the tools were not forwarded unchanged"
    [row] = wait_rows(inst, px["id"], 1)
    assert_row(row, model=PRICED_OPENAI, **OPENAI_USAGE, priced=True)


def test_openai_tool_calls_streaming(inst, tls, keys, upstream, oa):
    px = keys.proxy()
    stream = oa(px["key"]).chat.completions.create(model=PRICED_OPENAI, messages=msgs("weather?"),
                                                              tools=TOOLS, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        assert chunk.choices, "unexpected chunk without choices"
        c = chunk.choices[0]
        finish = c.finish_reason or finish
        for tc in c.delta.tool_calls or []:
            acc = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                acc["id"] = tc.id
            if tc.function and tc.function.name:
                acc["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                acc["arguments"] += tc.function.arguments
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"] == fu.TOOL_CALL_ID and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris"}
    [row] = wait_rows(inst, px["id"], 1)
    assert_row(row, model=PRICED_OPENAI, **OPENAI_USAGE, priced=True, streamed=True)


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_openai_embeddings(inst, tls, keys, upstream, encoding, oa):
    px = keys.proxy()
    n0 = upstream.count()
    resp = oa(px["key"]).embeddings.create(model=EMBEDDING_MODEL, input=["one", "two"],
                                                      encoding_format=encoding)
    assert len(resp.data) == 2
    emb = resp.data[0].embedding
    if encoding == "float":
        assert emb == [0.125, -0.5, 0.25, 1.0]
    else:
        assert isinstance(emb, str) and emb  # the SDK hands base64 back as sent
    assert resp.usage.prompt_tokens == 2 * fu.EMBEDDING_TOKENS_PER_INPUT
    assert resp.usage.total_tokens == 2 * fu.EMBEDDING_TOKENS_PER_INPUT
    [up] = upstream.since(n0)
    assert up.path == "/v1/embeddings" and up.credential == keys.openai_secret
    [row] = wait_rows(inst, px["id"], 1)
    assert_row(row, model=EMBEDDING_MODEL, prompt=2 * fu.EMBEDDING_TOKENS_PER_INPUT, completion=0)
    assert row["cost_usd"] is not None, f"{EMBEDDING_MODEL} is priced: cost should not be null: {row}"


def test_openai_models_list(inst, tls, keys, upstream, oa):
    px = keys.proxy()
    models = [m.id for m in oa(px["key"]).models.list()]
    assert PRICED_OPENAI in models and fu.SLOW_MODEL in models
    up = upstream.last()
    assert (up.method, up.path) == ("GET", "/v1/models") and up.credential == keys.openai_secret


# --------------------------------------------------------------------------------------------
# Anthropic SDK
# --------------------------------------------------------------------------------------------


def test_anthropic_messages_non_streaming(inst, tls, keys, upstream, an):
    px = keys.proxy("anthropic")
    n0 = upstream.count()
    raw = an(px["key"]).messages.with_raw_response.create(
        model=PRICED_ANTHROPIC, max_tokens=64, messages=msgs())
    assert_gateway_headers(raw.headers, "anthropic message")
    msg = raw.parse()
    assert msg.content[0].type == "text" and msg.content[0].text == fu.ANTHROPIC_TEXT
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == fu.ANTHROPIC_INPUT_TOKENS
    assert msg.usage.output_tokens == fu.ANTHROPIC_OUTPUT_TOKENS
    assert msg.usage.cache_read_input_tokens == fu.ANTHROPIC_CACHE_READ_TOKENS
    assert msg.usage.cache_creation_input_tokens == fu.ANTHROPIC_CACHE_CREATION_TOKENS
    [up] = upstream.since(n0)
    assert (up.method, up.path) == ("POST", "/v1/messages")
    assert up.header("x-api-key") == keys.anthropic_secret, "Anthropic did not get the provider key in x-api-key"
    assert up.header("authorization") is None, "a client Authorization header reached Anthropic"
    assert up.header("anthropic-version"), "anthropic-version header missing upstream"
    [row] = wait_rows(inst, px["id"], 1)
    assert_row(row, model=PRICED_ANTHROPIC, **ANTHROPIC_USAGE, priced=True, streamed=False)


def test_anthropic_messages_streaming(inst, tls, keys, upstream, an):
    px = keys.proxy("anthropic")
    with an(px["key"]).messages.stream(model=PRICED_ANTHROPIC, max_tokens=64, messages=msgs()) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "".join(fu.ANTHROPIC_STREAM_PIECES)
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == fu.ANTHROPIC_INPUT_TOKENS
    assert final.usage.output_tokens == fu.ANTHROPIC_OUTPUT_TOKENS
    assert upstream.last().header("x-api-key") == keys.anthropic_secret
    [row] = wait_rows(inst, px["id"], 1)
    assert_row(row, model=PRICED_ANTHROPIC, **ANTHROPIC_USAGE, priced=True, streamed=True)


# --------------------------------------------------------------------------------------------
# Request log and usage
# --------------------------------------------------------------------------------------------


def test_log_unknown_model_has_tokens_but_no_cost(inst, tls, keys, upstream, oa):
    px = keys.proxy()
    client = oa(px["key"])
    client.chat.completions.create(model=PRICED_OPENAI, messages=msgs())
    client.chat.completions.create(model=UNKNOWN_MODEL, messages=msgs())
    rows = wait_rows(inst, px["id"], 2)
    by_model = {r["model"]: r for r in rows}
    assert_row(by_model[PRICED_OPENAI], model=PRICED_OPENAI, **OPENAI_USAGE, priced=True)
    assert_row(by_model[UNKNOWN_MODEL], model=UNKNOWN_MODEL, **OPENAI_USAGE, priced=False)


def test_log_bodies_and_omit_headers(inst, http, keys, upstream):
    px = keys.proxy()
    marker = f"body-marker-{uuid.uuid4().hex}"
    auth = {"Authorization": f"Bearer {px['key']}"}
    cases = {
        "plain": {},
        "omit-request": {"Helicone-Omit-Request": "true"},
        "omit-response": {"Helicone-Omit-Response": "true"},
        "omit-both": {"Helicone-Omit-Request": "true", "Helicone-Omit-Response": "true"},
    }
    ids = {}
    for name, extra in cases.items():
        r = http.post("/v1/chat/completions", json=chat_body(messages=msgs(f"{marker} {name}")),
                      headers={**auth, **extra})
        assert r.status_code == 200, r.text
        ids[name] = r.headers[REQUEST_ID_HEADER]
    wait_rows(inst, px["id"], len(cases))
    detail = {}
    for name, rid in ids.items():
        r = inst.api("GET", f"/api/requests/{rid}")
        assert r.status_code == 200, r.text
        detail[name] = r.json()
    d = detail["plain"]
    assert isinstance(d["request_body"], str) and f"{marker} plain" in d["request_body"], d["request_body"]
    assert isinstance(d["response_body"], str) and fu.OPENAI_TEXT in d["response_body"], d["response_body"]
    assert detail["omit-request"]["request_body"] is None, "Helicone-Omit-Request: request body was stored"
    assert fu.OPENAI_TEXT in (detail["omit-request"]["response_body"] or "")
    assert detail["omit-response"]["response_body"] is None, "Helicone-Omit-Response: response body was stored"
    assert f"{marker} omit-response" in (detail["omit-response"]["request_body"] or "")
    assert detail["omit-both"]["request_body"] is None and detail["omit-both"]["response_body"] is None
    # Omitting bodies does not omit usage.
    for name in cases:
        assert_row(detail[name], model=PRICED_OPENAI, **OPENAI_USAGE, priced=True)
    # The list never carries bodies.
    for row in rows_of(inst, px["id"]):
        assert "request_body" not in row and "response_body" not in row


def test_log_user_id_and_properties(inst, http, keys, upstream):
    px = keys.proxy()
    user = f"user-{uuid.uuid4().hex[:10]}"
    n0 = upstream.count()
    r = http.post("/v1/chat/completions", json=chat_body(),
                  headers={"Authorization": f"Bearer {px['key']}", "Helicone-User-Id": user,
                           "Helicone-Property-Foo": "bar-value"})
    assert r.status_code == 200, r.text
    [up] = upstream.since(n0)
    assert not any(n.startswith("helicone-") for n in up.header_names()), "Helicone-* headers reached the provider"
    [row] = wait_rows(inst, px["id"], 1)
    assert row["user_id"] == user, row
    props = {k.lower(): v for k, v in (row["properties"] or {}).items()}
    assert props.get("foo") == "bar-value", f"Helicone-Property-Foo missing from properties: {row['properties']}"
    # Filter by user.
    r = inst.api("GET", f"/api/requests?user={user}")
    assert r.status_code == 200 and [x["id"] for x in r.json()["data"]] == [row["id"]], r.text


def _sum(rows: list[dict]) -> dict:
    return {
        "requests": len(rows),
        "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in rows),
        "completion_tokens": sum(r["completion_tokens"] or 0 for r in rows),
        "cached_tokens": sum(r["cached_tokens"] or 0 for r in rows),
        "cost_micros": sum(r["cost_micros"] or 0 for r in rows),
        "unpriced_requests": sum(1 for r in rows if r["cost_micros"] is None),
    }


def _usage_view(u: dict) -> dict:
    return {k: u[k] for k in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_micros",
                              "unpriced_requests")}


def test_usage_totals_match(inst, tls, http, keys, upstream, an):
    px = keys.proxy()
    px_a = keys.proxy("anthropic")
    user = f"usage-user-{uuid.uuid4().hex[:10]}"
    h = {"Authorization": f"Bearer {px['key']}", "Helicone-User-Id": user}
    for body in (chat_body(), chat_body(), chat_body(UNKNOWN_MODEL), chat_body(stream=True)):
        r = http.post("/v1/chat/completions", json=body, headers=h)
        assert r.status_code == 200, r.text
    an(px_a["key"]).messages.create(model=PRICED_ANTHROPIC, max_tokens=32, messages=msgs())
    rows = wait_rows(inst, px["id"], 4)
    wait_rows(inst, px_a["id"], 1)

    # per proxy key: exactly what we sent
    exp = {"requests": 4, "prompt_tokens": 4 * fu.OPENAI_PROMPT_TOKENS,
           "completion_tokens": 4 * fu.OPENAI_COMPLETION_TOKENS, "cached_tokens": 4 * fu.OPENAI_CACHED_TOKENS,
           "cost_micros": _sum(rows)["cost_micros"], "unpriced_requests": 1}
    assert exp["cost_micros"] > 0
    r = inst.api("GET", "/api/usage?group_by=proxy_key")
    assert r.status_code == 200, r.text
    assert r.json()["group_by"] == "proxy_key"
    grp = {u["group"]: u for u in r.json()["data"]}
    assert px["id"] in grp, f"no usage row for proxy key {px['id']}"
    assert _usage_view(grp[px["id"]]) == exp, (
        f"usage of proxy key: {grp[px['id']]}; log rows: "
        f"{[(x['model'], x['status'], x['cost_micros'], x['prompt_tokens']) for x in rows]}")
    assert grp[px["id"]]["cost_usd"] == pytest.approx(exp["cost_micros"] / 1e6)
    assert _usage_view(grp[px_a["id"]]) == _sum(rows_of(inst, px_a["id"]))

    # per user
    r = inst.api("GET", "/api/usage?group_by=user")
    assert r.status_code == 200, r.text
    mine = [u for u in r.json()["data"] if u.get("user_id") == user]
    assert len(mine) == 1, f"expected one usage row for user {user}: {r.json()['data']}"
    assert _usage_view(mine[0]) == exp

    # per model and per day: against the whole log (every row of this module so far)
    everything = all_rows(inst)
    for group_by, key in (("model", lambda row: row["model"] or "unknown"),
                          ("day", lambda row: row["started_at"][:10])):
        r = inst.api("GET", f"/api/usage?group_by={group_by}")
        assert r.status_code == 200, r.text
        got = {u["group"]: _usage_view(u) for u in r.json()["data"]}
        want: dict[str, list] = {}
        for row in everything:
            want.setdefault(key(row), []).append(row)
        assert got == {g: _sum(rs) for g, rs in want.items()}, f"usage by {group_by} does not match the request log"


# --------------------------------------------------------------------------------------------
# Response headers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["ok", "stream", "provider-error", "unauthenticated", "bad-json", "unreachable"])
def test_every_gateway_response_has_request_id_and_overhead(inst, http, keys, upstream, case):
    px = keys.proxy("dead" if case == "unreachable" else "openai")
    h = {"Authorization": f"Bearer {px['key']}"}
    if case == "ok":
        r = http.post("/v1/chat/completions", json=chat_body(), headers=h)
    elif case == "stream":
        r = http.post("/v1/chat/completions", json=chat_body(stream=True), headers=h)
    elif case == "provider-error":
        r = http.post("/v1/chat/completions", json=chat_body(fu.ERROR_MODEL), headers=h)
    elif case == "unauthenticated":
        r = http.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": "Bearer gate_proxy_nope"})
    elif case == "bad-json":
        r = http.post("/v1/chat/completions", content=b'{"model": ', headers={**h, "Content-Type": "application/json"})
    else:
        r = http.post("/v1/chat/completions", json=chat_body(), headers=h)
    expected = {"ok": 200, "stream": 200, "provider-error": 429, "unauthenticated": 401, "bad-json": 400,
                "unreachable": 502}[case]
    assert r.status_code == expected, r.text[:300]
    assert_gateway_headers(r.headers, f"{case} ({r.status_code})")


# --------------------------------------------------------------------------------------------
# Authentication and authorisation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["x-api-key", "authorization-bearer", "helicone-auth-bearer"])
def test_auth_header_variants(inst, http, keys, upstream, scheme):
    px = keys.proxy()
    h = {"x-api-key": {"x-api-key": px["key"]},
         "authorization-bearer": {"Authorization": f"Bearer {px['key']}"},
         "helicone-auth-bearer": {"Helicone-Auth": f"Bearer {px['key']}"}}[scheme]
    n0 = upstream.count()
    r = http.post("/v1/chat/completions", json=chat_body(), headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == fu.OPENAI_TEXT
    [up] = upstream.since(n0)
    assert up.credential == keys.openai_secret
    assert not up.gate_leaks, up.gate_leaks
    assert "x-api-key" not in up.header_names() and "helicone-auth" not in up.header_names()
    assert upstream.gate_leaks() == []
    wait_rows(inst, px["id"], 1)


def _bad_key_cases(inst, keys) -> dict:
    px = keys.proxy()
    key = px["key"]
    org_api = inst.create_org_key("api", name="gw-automation")["key"]
    org_read = inst.create_org_key("read", name="gw-reader")["key"]
    return {
        "malformed": "gate_proxy_thisisnotakey",
        "not-a-gatehouse-key": "sk-" + secrets.token_hex(20),
        "one-char-changed (checksum fixed)": tamper_key(key, keep_checksum_valid=True),
        "one-char-changed": tamper_key(key, keep_checksum_valid=False),
        "truncated": key[:-1],
        "owner api key": inst.owner_key,
        "api key (kind api)": org_api,
        "read key": org_read,
    }


def test_bad_keys_are_401_in_openai_shape(inst, http, tls, keys, upstream, oa):
    cases = _bad_key_cases(inst, keys)
    n0 = upstream.count()
    for name, bad in cases.items():
        for h in ({"Authorization": f"Bearer {bad}"}, {"x-api-key": bad}):
            r = http.post("/v1/chat/completions", json=chat_body(), headers=h)
            try:
                assert_openai_error(r, 401)
            except AssertionError as e:
                raise AssertionError(f"{name} via {list(h)[0]}: {e}") from None
    r = http.post("/v1/chat/completions", json=chat_body())
    assert_openai_error(r, 401)  # no key at all
    assert upstream.count() == n0, "a request with a bad key reached the provider"
    # The SDK maps it to AuthenticationError.
    for name in ("one-char-changed (checksum fixed)", "api key (kind api)"):
        with pytest.raises(openai.AuthenticationError):
            oa(cases[name]).chat.completions.create(model=PRICED_OPENAI, messages=msgs())
    assert upstream.count() == n0


def test_revoked_key_is_refused_on_the_next_request(inst, http, tls, keys, upstream, oa):
    px = keys.proxy()
    h = {"Authorization": f"Bearer {px['key']}"}
    assert http.post("/v1/chat/completions", json=chat_body(), headers=h).status_code == 200
    r = inst.api("POST", f"/api/proxy-keys/{px['id']}/revoke")
    assert r.status_code in (200, 204), r.text
    n0 = upstream.count()
    assert_openai_error(http.post("/v1/chat/completions", json=chat_body(), headers=h), 401)
    with pytest.raises(openai.AuthenticationError):
        oa(px["key"]).chat.completions.create(model=PRICED_OPENAI, messages=msgs())
    assert upstream.count() == n0


def test_allowed_models(inst, http, tls, keys, upstream, oa):
    px = keys.proxy(allowed_models=[PRICED_OPENAI])
    client = oa(px["key"])
    assert client.chat.completions.create(model=PRICED_OPENAI, messages=msgs()).choices[0].message.content
    n0 = upstream.count()
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o", messages=msgs())
    r = http.post("/v1/chat/completions", json=chat_body("gpt-4o"), headers={"Authorization": f"Bearer {px['key']}"})
    assert_openai_error(r, 403)
    assert upstream.count() == n0


def test_allowed_ips_refuses_loopback(inst, http, keys, upstream):
    px = keys.proxy(allowed_ips=["10.0.0.0/8"])
    n0 = upstream.count()
    r = http.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {px['key']}"})
    assert_openai_error(r, 403)
    assert upstream.count() == n0
    ok = keys.proxy(allowed_ips=["127.0.0.0/8"])
    r = http.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {ok['key']}"})
    assert r.status_code == 200, r.text


def test_expired_key_is_refused(inst, http, keys, upstream):
    expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=4)
    px = keys.proxy(expires_at=expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
    h = {"Authorization": f"Bearer {px['key']}"}
    r = http.post("/v1/chat/completions", json=chat_body(), headers=h)
    assert r.status_code == 200, f"key should work before its expiry: {r.status_code} {r.text}"
    wait = (expires - datetime.now(timezone.utc)).total_seconds() + 0.3
    if wait > 0:
        time.sleep(wait)
    n0 = upstream.count()
    assert_openai_error(http.post("/v1/chat/completions", json=chat_body(), headers=h), 401)
    assert upstream.count() == n0


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_invalid_json_is_400(inst, http, keys, upstream):
    px = keys.proxy()
    n0 = upstream.count()
    for body in (b'{"model": "gpt-4o-mini", "messages": [', b"not json at all", b"[1, 2"):
        r = http.post("/v1/chat/completions", content=body,
                      headers={"Authorization": f"Bearer {px['key']}", "Content-Type": "application/json"})
        assert_openai_error(r, 400)
    assert upstream.count() == n0


def test_body_over_32_mib_is_413(inst, http, keys, upstream):
    px = keys.proxy()
    n0 = upstream.count()
    filler = "a" * (33 * 1024 * 1024)
    body = json.dumps(chat_body(messages=msgs(filler))).encode()
    assert len(body) > 33 * 1024 * 1024
    r = http.post("/v1/chat/completions", content=body,
                  headers={"Authorization": f"Bearer {px['key']}", "Content-Type": "application/json"})
    assert_openai_error(r, 413)
    assert upstream.count() == n0
    # The server is fine afterwards.
    r = http.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {px['key']}"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("provider,model,status,expected", [
    ("openai", fu.ERROR_MODEL, 429, fu.OPENAI_ERROR_BODY),
    ("openai", fu.BAD_REQUEST_MODEL, 400, fu.OPENAI_BAD_REQUEST_BODY),
    ("anthropic", fu.ERROR_MODEL, 429, fu.ANTHROPIC_ERROR_BODY),
])
def test_provider_error_passes_through(inst, http, tls, keys, upstream, provider, model, status, expected, oa):
    px = keys.proxy(provider)
    path = "/v1/messages" if provider == "anthropic" else "/v1/chat/completions"
    body = {"model": model, "max_tokens": 16, "messages": msgs()}
    r = http.post(path, json=body, headers={"Authorization": f"Bearer {px['key']}"})
    assert r.status_code == status, r.text
    assert r.json() == expected
    assert r.content == fu._dumps(expected), "the provider's error body was not passed through byte for byte"
    assert_no_secret(r.content, "provider error body")
    assert_gateway_headers(r.headers, "provider error")
    if provider == "openai":
        with pytest.raises(openai.RateLimitError if status == 429 else openai.BadRequestError):
            oa(px["key"]).chat.completions.create(model=model, messages=msgs())
    rows = wait_rows(inst, px["id"], 2 if provider == "openai" else 1)
    for row in rows:
        assert_row(row, model=model, status=status)


def test_upstream_unreachable_is_502(inst, keys, upstream, oa):
    """The provider key's base URL points to a closed port (one call: the gateway currently
    spends its whole connect timeout on it)."""
    px = keys.proxy("dead")
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as ei:
        oa(px["key"]).chat.completions.create(model=PRICED_OPENAI, messages=msgs())
    elapsed = time.monotonic() - t0
    print(f"502 for a closed upstream port after {elapsed:.2f}s")
    assert ei.value.status_code == 502
    assert_openai_error(ei.value.response, 502)
    [row] = wait_rows(inst, px["id"], 1)
    assert row["status"] == 502, row


def test_redirect_is_not_followed(inst, http, keys, upstream):
    px = keys.proxy()
    n0 = upstream.count()
    r = http.get(fu.REDIRECT_PATH, headers={"Authorization": f"Bearer {px['key']}"})
    assert r.status_code == 302 or r.status_code >= 500, f"expected the 302 or an error, got {r.status_code}"
    assert b"REDIRECT-TARGET-BODY" not in r.content, "the gateway followed the provider's redirect"
    calls = upstream.since(n0)
    assert [c.path for c in calls] == [fu.REDIRECT_PATH], f"upstream calls: {[c.path for c in calls]}"
    assert not upstream.find(lambda c: c.path == fu.REDIRECT_TARGET_PATH), "the redirect target was requested"


# --------------------------------------------------------------------------------------------
# Streaming behaviour
# --------------------------------------------------------------------------------------------


def test_openai_stream_is_not_buffered(inst, tls, keys, upstream, oa):
    px = keys.proxy()
    client = oa(px["key"])
    t0 = time.monotonic()
    stream = client.chat.completions.create(model=fu.SLOW_MODEL, messages=msgs(), stream=True)
    times, text = [], ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.monotonic() - t0)
            text += chunk.choices[0].delta.content
    assert text == "".join(fu.SLOW_PIECES)
    assert times[0] < 1.0, f"first chunk after {times[0]:.2f}s: the stream is buffered"
    assert times[-1] >= 3.0, f"last chunk after {times[-1]:.2f}s (expected >= 3s): test premise broken"
    [row] = wait_rows(inst, px["id"], 1)
    assert_row(row, model=fu.SLOW_MODEL, **OPENAI_USAGE, priced=False, streamed=True)
    assert row["time_to_first_token_ms"] is not None and row["time_to_first_token_ms"] < 1000, row


def test_anthropic_stream_is_not_buffered(inst, tls, keys, upstream, an):
    px = keys.proxy("anthropic")
    t0 = time.monotonic()
    times = []
    with an(px["key"]).messages.stream(model=fu.SLOW_MODEL, max_tokens=32, messages=msgs()) as s:
        for _ in s.text_stream:
            times.append(time.monotonic() - t0)
    assert len(times) == len(fu.SLOW_PIECES)
    assert times[0] < 1.0, f"first text after {times[0]:.2f}s: the stream is buffered"
    assert times[-1] >= 3.0, f"last text after {times[-1]:.2f}s"


def test_client_disconnect_mid_stream(inst, http, tls, keys, upstream):
    px = keys.proxy()
    body = chat_body(fu.SLOW_MODEL, stream=True)
    t0 = time.monotonic()
    with httpx.Client(base_url=inst.base_url, verify=tls, timeout=30.0) as c:
        with c.stream("POST", "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {px['key']}"}) as r:
            assert r.status_code == 200
            first = next(r.iter_raw())
            assert b"data:" in first
            assert time.monotonic() - t0 < 1.0, "first chunk was late"
        # leaving both blocks closes the connection mid-stream
    [row] = wait_rows(inst, px["id"], 1, timeout=8.0)
    assert row["status"] == 200, row
    assert row["model"] == fu.SLOW_MODEL
    # The server keeps serving.
    r = http.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {px['key']}"})
    assert r.status_code == 200, r.text
    assert inst.api("GET", "/api/health", key=None).status_code == 200


# --------------------------------------------------------------------------------------------
# The engine: request order on a connection, provider connections, upstream timeouts
# --------------------------------------------------------------------------------------------


def _raw_post(path: str, key: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data


def test_pipelined_requests_are_answered_in_order(inst, keys, upstream):
    """Gateway and admin requests written back to back on one connection (HTTP/1.1 pipelining)
    come back in order, each whole: the gateway holds a later request until the router has
    answered an earlier one, and the other way round."""
    px = keys.proxy()
    health = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    models = f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {px['key']}\r\n\r\n".encode()
    n0 = upstream.count()
    with RawTLS(inst) as c:
        c.send(health + _raw_post("/v1/chat/completions", px["key"], chat_body(fu.SLOW_MODEL, stream=True)) + health
               + _raw_post("/v1/chat/completions", px["key"], chat_body()) + models + health)
        got = c.responses(6, timeout=15)
    assert [r.status_code for r in got] == [200] * 6, [(r.status_code, r.text[:200]) for r in got]
    assert got[0].json() == {"status": "ok"} and got[2].json() == {"status": "ok"} and got[5].json() == {"status": "ok"}
    assert got[1].headers["content-type"].startswith("text/event-stream")
    assert "".join(fu.SLOW_PIECES) in "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in got[1].text.splitlines() if line.startswith("data: {") and json.loads(line[6:])["choices"])
    assert got[3].json()["choices"][0]["message"]["content"] == fu.OPENAI_TEXT
    assert got[4].json()["object"] == "list"
    ids = [got[i].headers.get(REQUEST_ID_HEADER) for i in (1, 3, 4)]
    assert all(ids) and len(set(ids)) == 3, ids
    assert [(r.method, r.path) for r in upstream.since(n0)] == [
        ("POST", "/v1/chat/completions"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models")]
    wait_rows(inst, px["id"], 3)


def test_keep_alive_connection_alternates_gateway_and_router(inst, http, keys, upstream):
    px = keys.proxy()
    auth = {"Authorization": f"Bearer {px['key']}"}
    for i in range(10):
        r = http.post("/v1/chat/completions", json=chat_body(), headers=auth)
        assert r.status_code == 200, r.text
        assert inst.api("GET", "/api/health", key=None).status_code == 200
        r = http.get("/api/health")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
    wait_rows(inst, px["id"], 10)


def test_keys_on_one_kept_alive_connection_are_decided_on_every_request(inst, tls, keys, upstream):
    """A connection remembers the proxy key it last proved, so the same key sent again is not
    HMAC-checked again; everything else still is, request by request, on that one connection:
    a forged key, another key and back, a key revoked or expired meanwhile, and its provider
    key deleted."""
    import http.client
    a, b = keys.proxy(), keys.proxy()
    expiring = keys.proxy(expires_at=(datetime.now(timezone.utc) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    conn = http.client.HTTPSConnection("127.0.0.1", inst.port, context=tls, timeout=10)
    body = json.dumps(chat_body()).encode()

    def post(key: str) -> int:
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status

    try:
        assert post(a["key"]) == 200
        sock = conn.sock
        assert post(a["key"]) == 200
        assert post(tamper_key(a["key"], keep_checksum_valid=True)) == 401
        assert post(a["key"]) == 200
        assert post(b["key"]) == 200
        assert post(a["key"]) == 200
        assert inst.api("POST", f"/api/proxy-keys/{a['id']}/revoke").status_code == 200
        assert post(a["key"]) == 401
        assert post(b["key"]) == 200
        assert post(a["key"]) == 401
        assert post(expiring["key"]) == 200
        assert poll_until(lambda: post(expiring["key"]) == 401, 8.0) is not None
        assert post(b["key"]) == 200
        assert conn.sock is sock, "the requests did not all share one connection"
    finally:
        conn.close()
    # Deleting the provider key revokes its proxy keys: refused on the next request.
    other, other_secret = inst.create_provider_key(name="doomed", provider="openai", base_url=upstream.base_url)
    keys.more_secrets.add(other_secret)
    c = inst.create_proxy_key(other["id"], name="on-doomed")
    REGISTRY.add_gatehouse_key(c["key"], "proxy key (test_gateway)")
    conn = http.client.HTTPSConnection("127.0.0.1", inst.port, context=tls, timeout=10)
    try:
        assert post(c["key"]) == 200
        sock = conn.sock
        assert inst.api("DELETE", f"/api/provider-keys/{other['id']}").status_code in (200, 204)
        assert post(c["key"]) == 401
        assert conn.sock is sock
    finally:
        conn.close()


def test_provider_closing_its_connection_each_time(inst, http, keys, upstream):
    """A provider that answers `Connection: close`: its connection is never reused."""
    px = keys.proxy()
    for _ in range(3):
        r = http.post("/v1/chat/completions", json=chat_body(fu.CLOSE_MODEL), headers={"Authorization": f"Bearer {px['key']}"})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == fu.OPENAI_TEXT
    rows = wait_rows(inst, px["id"], 3)
    assert all(row["status"] == 200 and row["prompt_tokens"] == fu.OPENAI_PROMPT_TOKENS for row in rows), rows


def test_provider_dropping_the_stream_ends_the_clients(inst, tls, keys, upstream):
    """The provider closes mid-stream: the client's response is cut short (its connection is
    closed, never a clean end), the row says `stream_interrupted`, and the next call works."""
    px = keys.proxy()
    with httpx.Client(base_url=inst.base_url, verify=tls, timeout=10.0) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(fu.DROP_MODEL, stream=True),
                      headers={"Authorization": f"Bearer {px['key']}"}) as r:
            assert r.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in r.iter_raw():
                    pass
        r = c.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {px['key']}"})
        assert r.status_code == 200, r.text
    rows = wait_rows(inst, px["id"], 2)
    assert rows[0]["error"] == "stream_interrupted" and rows[0]["status"] == 200, rows[0]
    assert rows[1]["error"] is None, rows[1]


def test_client_leaving_mid_stream_closes_the_provider_connection(inst, tls, keys, upstream):
    px = keys.proxy()
    aborted = upstream.aborted_streams
    with httpx.Client(base_url=inst.base_url, verify=tls, timeout=30.0) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(fu.SLOW_MODEL, stream=True),
                      headers={"Authorization": f"Bearer {px['key']}"}) as r:
            assert r.status_code == 200
            assert b"data:" in next(r.iter_raw())
    # The fake notices at its next write (one SLOW_DELAY later).
    assert poll_until(lambda: upstream.aborted_streams > aborted, timeout=2 * fu.SLOW_DELAY + 2), \
        "the provider's stream was not cut when the client left"
    [row] = wait_rows(inst, px["id"], 1)
    assert row["error"] == "stream_interrupted", row


def _timeout_instance(gatehouse, upstream, tmp_path, *flags):
    pricing = tmp_path / "pricing.json"
    pricing.write_text(json.dumps({"models": {m: {"input": 1.0, "output": 2.0}
                                              for m in (PRICED_OPENAI, fu.HEAD_DELAY_MODEL, fu.SLOW_MODEL)}}))
    g = gatehouse(True, "--pricing", str(pricing), *flags)
    pk, _ = g.create_provider_key(name="timeouts", provider="openai", base_url=upstream.base_url)
    px = g.create_proxy_key(pk["id"], name="timeouts", budget={"limit_usd": 5, "period": "month"})
    REGISTRY.add_gatehouse_key(px["key"], "proxy key (upstream timeouts)")
    return g, px


def _post_head_delayed(g, px):
    """A chat call the fake provider starts answering only after HEAD_DELAY seconds: the
    response and how long it took."""
    t0 = time.monotonic()
    r = requests.post(g.base_url + "/v1/chat/completions", json=chat_body(fu.HEAD_DELAY_MODEL),
                      headers={"Authorization": f"Bearer {px['key']}"}, verify=g.verify, timeout=10)
    return r, time.monotonic() - t0


def _slow_stream_until_closed(g, px) -> bytes:
    """Streams SLOW_MODEL (pieces SLOW_DELAY apart) until Gatehouse closes the connection mid-
    stream; what arrived before."""
    received = b""
    with httpx.Client(base_url=g.base_url, verify=ssl.create_default_context(cafile=str(g.verify)), timeout=10.0) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(fu.SLOW_MODEL, stream=True),
                      headers={"Authorization": f"Bearer {px['key']}"}) as r:
            assert r.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                for part in r.iter_raw():
                    received += part
    return received


def test_upstream_head_timeout_is_504(gatehouse, tmp_path):
    """A provider that does not start answering within --upstream-head-timeout: 504, logged,
    nothing spent. (Its own fake provider: the module's checks every credential the shared one
    saw against the module's keys.)"""
    with fu.FakeUpstream() as upstream:
        g, px = _timeout_instance(gatehouse, upstream, tmp_path, "--upstream-head-timeout", "0.5")
        auth = {"Authorization": f"Bearer {px['key']}"}
        r, elapsed = _post_head_delayed(g, px)
        assert_openai_error(r, 504)
        assert r.json()["error"]["code"] == "upstream_timeout"
        assert 0.4 < elapsed < fu.HEAD_DELAY, f"504 after {elapsed:.2f}s"
        r = requests.post(g.base_url + "/v1/chat/completions", json=chat_body(), headers=auth, verify=g.verify, timeout=10)
        assert r.status_code == 200, r.text
        rows = wait_rows(g, px["id"], 2)
        assert (rows[0]["status"], rows[0]["error"]) == (504, "upstream_timeout"), rows[0]
        # Nothing spent on the timed-out call: the key's spend is exactly the second call's cost.
        assert rows[1]["cost_usd"] > 0, rows[1]
        spent = g.api("GET", f"/api/proxy-keys/{px['id']}").json()["spent_usd"]
        assert abs(spent - rows[1]["cost_usd"]) < 1e-6, (spent, rows[1]["cost_usd"])


def test_upstream_read_timeout_ends_the_stream(gatehouse, tmp_path):
    """A stream whose provider goes quiet for longer than --upstream-read-timeout is ended:
    the client's connection is closed after what had arrived, and the row says so."""
    with fu.FakeUpstream() as upstream:
        g, px = _timeout_instance(gatehouse, upstream, tmp_path, "--upstream-read-timeout", "0.5")
        t0 = time.monotonic()
        received = _slow_stream_until_closed(g, px)
        elapsed = time.monotonic() - t0
        assert fu.SLOW_PIECES[0].encode() in received and fu.SLOW_PIECES[1].encode() not in received, received
        assert elapsed < fu.SLOW_DELAY, f"the stream ended after {elapsed:.2f}s"
        [row] = wait_rows(g, px["id"], 1)
        assert row["error"] == "stream_interrupted", row


def test_a_late_head_is_not_a_read_timeout(gatehouse, tmp_path):
    """The gap between chunks is counted from the response head, not from the request: a provider
    that takes longer than --upstream-read-timeout to start answering (but less than the head
    timeout) is answered normally, and a stream that then stalls is still ended on time."""
    with fu.FakeUpstream() as upstream:
        g, px = _timeout_instance(gatehouse, upstream, tmp_path, "--upstream-read-timeout", "0.5")
        r, elapsed = _post_head_delayed(g, px)
        assert r.status_code == 200, r.text
        assert elapsed >= fu.HEAD_DELAY
        # The same installation still ends a stream that goes quiet for longer than the timeout.
        t0 = time.monotonic()
        received = _slow_stream_until_closed(g, px)
        assert fu.SLOW_PIECES[1].encode() not in received, received
        assert time.monotonic() - t0 < fu.SLOW_DELAY
        rows = wait_rows(g, px["id"], 2)
        assert [row["status"] for row in rows] == [200, 200], rows
        assert [row["error"] for row in rows] == [None, "stream_interrupted"], rows


def test_timeouts_hold_for_every_request_on_a_kept_alive_connection(gatehouse, tmp_path):
    """The engine keeps one timer per client connection, left pending between requests: a
    timer armed for an earlier request (or one that fired while the connection was idle) must
    neither cut a later request short nor let it wait past its own head timeout."""
    with fu.FakeUpstream() as upstream:
        g, px = _timeout_instance(gatehouse, upstream, tmp_path, "--upstream-head-timeout", "0.8")
        auth = {"Authorization": f"Bearer {px['key']}"}
        with requests.Session() as s:
            def post(model):
                t0 = time.monotonic()
                r = s.post(g.base_url + "/v1/chat/completions", json=chat_body(model), headers=auth, verify=g.verify, timeout=10)
                return r, time.monotonic() - t0
            r, _ = post(PRICED_OPENAI)
            assert r.status_code == 200, r.text
            time.sleep(0.5)  # the first request's timer is still pending, due in ~0.3 s
            r, elapsed = post(fu.HEAD_DELAY_MODEL)
            assert_openai_error(r, 504)
            assert 0.7 < elapsed < fu.HEAD_DELAY, f"504 after {elapsed:.2f}s: the pending timer cut it short or it waited"
            time.sleep(1.0)  # a timer that fires with no exchange running stops
            r, _ = post(PRICED_OPENAI)
            assert r.status_code == 200, r.text
            r, elapsed = post(fu.HEAD_DELAY_MODEL)
            assert_openai_error(r, 504)
            assert 0.7 < elapsed < fu.HEAD_DELAY, f"504 after {elapsed:.2f}s"
        rows = wait_rows(g, px["id"], 4)
        assert [(row["status"], row["error"]) for row in rows] == [
            (200, None), (504, "upstream_timeout"), (200, None), (504, "upstream_timeout")], rows


def _raw_chat(key: str) -> bytes:
    body = json.dumps(chat_body(PRICED_OPENAI)).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + key.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def test_idle_timeout_closes_idle_connections_not_running_streams(gatehouse, tmp_path):
    """--idle-timeout closes a kept-alive connection that has had no request in progress for
    that long, after a gateway request as after a router one; a gateway stream whose pieces
    come further apart than the timeout runs to its end (the gateway keeps this state for
    every request: Hummingbird's own handler never sees the gateway's)."""
    with fu.FakeUpstream() as upstream:
        g, px = _timeout_instance(gatehouse, upstream, tmp_path, "--idle-timeout", "1")
        for first in (_raw_chat(px["key"]), b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"):
            with RawTLS(g) as c:
                c.send(first)
                [r] = c.responses(1, timeout=5)
                assert r.status_code == 200, r.content[:300]
                t0 = time.monotonic()
                reply = c.read_until_close(4.0)
                idle = time.monotonic() - t0
                assert reply.closed and 0.7 < idle < 2.5, f"closed={reply.closed} after {idle:.2f}s: {first[:20]!r}"
        received = b""
        with httpx.Client(base_url=g.base_url, verify=ssl.create_default_context(cafile=str(g.verify)), timeout=10.0) as c:
            with c.stream("POST", "/v1/chat/completions", json=chat_body(fu.SLOW_MODEL, stream=True),
                          headers={"Authorization": f"Bearer {px['key']}"}) as r:
                assert r.status_code == 200
                for part in r.iter_raw():
                    received += part
        assert all(piece.encode() in received for piece in fu.SLOW_PIECES), received
        [row] = [row for row in wait_rows(g, px["id"], 2) if row["streamed"]]
        assert (row["status"], row["error"]) == (200, None), row


def test_graceful_shutdown_finishes_a_running_stream(gatehouse, tmp_path):
    """SIGTERM while a gateway stream runs: a kept-alive idle connection is closed at once, the
    stream runs to its end, then the server exits cleanly."""
    with fu.FakeUpstream() as upstream:
        g, px = _timeout_instance(gatehouse, upstream, tmp_path)
        with RawTLS(g) as idle:
            idle.send(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            [r] = idle.responses(1, timeout=5)
            assert r.status_code == 200
            received = b""
            with httpx.Client(base_url=g.base_url, verify=ssl.create_default_context(cafile=str(g.verify)), timeout=10.0) as c:
                with c.stream("POST", "/v1/chat/completions", json=chat_body(fu.SLOW_MODEL, stream=True),
                              headers={"Authorization": f"Bearer {px['key']}"}) as r:
                    assert r.status_code == 200
                    parts = r.iter_raw()
                    while fu.SLOW_PIECES[0].encode() not in received:
                        received += next(parts)
                    g.proc.send_signal(signal.SIGTERM)
                    reply = idle.read_until_close(2.0)
                    assert reply.closed, "an idle connection was left open by the shutdown"
                    for part in parts:
                        received += part
        assert all(piece.encode() in received for piece in fu.SLOW_PIECES), received
        assert b"[DONE]" in received, received[-200:]
        assert g.proc.wait(15) == 0


def test_https_provider(gatehouse, tmp_path):
    """A provider over HTTPS: its certificate is verified — chain (the system's roots plus
    `--upstream-ca-file`) and host name (SNI `localhost`) — before the provider key is sent."""
    cert, key = tmp_path / "provider.pem", tmp_path / "provider.key"
    write_self_signed(cert, key, common_name="localhost", dns=("localhost",), ips=())
    with fu.FakeUpstream(tls=(cert, key)) as up:
        trusted = gatehouse(True, "--upstream-ca-file", str(cert))
        untrusted = gatehouse(True)
        for g in (trusted, untrusted):
            pk, _ = g.create_provider_key(name="https", provider="openai", base_url=up.base_url)
            wrong_name, _ = g.create_provider_key(name="https-ip", provider="openai",
                                                  base_url=f"https://127.0.0.1:{up.port}")
            g.px = g.create_proxy_key(pk["id"], name="https")
            g.px_wrong_name = g.create_proxy_key(wrong_name["id"], name="https-ip")
            REGISTRY.add_gatehouse_key(g.px["key"], "proxy key (https provider)")
            REGISTRY.add_gatehouse_key(g.px_wrong_name["key"], "proxy key (https provider, wrong name)")

        def post(g, px, body):
            return requests.post(g.base_url + "/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {px['key']}"}, verify=g.verify, timeout=10)

        n0 = up.count()
        r = post(trusted, trusted.px, chat_body())
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == fu.OPENAI_TEXT
        r = post(trusted, trusted.px, chat_body(stream=True))
        assert r.status_code == 200 and "data: [DONE]" in r.text, r.text[:300]
        assert len(up.since(n0)) == 2
        # Verification is on: a certificate nobody vouches for, or one for another name, is a 502
        # and the provider never sees a request (so never the provider key).
        for g, px in ((untrusted, untrusted.px), (trusted, trusted.px_wrong_name)):
            r = post(g, px, chat_body())
            assert_openai_error(r, 502)
            assert r.json()["error"]["code"] == "upstream_unreachable"
        assert len(up.since(n0)) == 2, [c.path for c in up.since(n0)]
        assert up.violations == [], up.violations
        [row] = wait_rows(untrusted, untrusted.px["id"], 1)
        assert (row["status"], row["error"]) == (502, "upstream_unreachable"), row


def test_upstream_ca_file_must_hold_certificates(gatehouse, tmp_path):
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate\n")
    for path in (bad, tmp_path / "missing.pem"):
        res = gatehouse(start=False).serve_expect_exit("--upstream-ca-file", str(path))
        assert res.rc in (1, 2), f"rc={res.rc}\n{res.stderr}"
        assert "initialised" not in res.stdout, "refused only after creating an installation"
        assert "CA certificate" in assert_one_error_line(res.stderr), res.stderr
        assert not res.port_opened


def test_no_gatehouse_key_ever_reached_the_provider(upstream, keys):
    """Whole-module check (runs after the others in this file)."""
    assert upstream.requests, "the fake upstream received nothing"
    assert upstream.gate_leaks() == []
    assert upstream.violations == []
    allowed = {keys.openai_secret, keys.anthropic_secret} | keys.more_secrets
    creds = {r.credential for r in upstream.requests if r.path not in (fu.REDIRECT_TARGET_PATH,)}
    assert creds <= allowed, "the provider received a credential that is not a provider key"


def test_every_https_response_carries_hsts(inst, http, keys, upstream):
    """`Strict-Transport-Security` on admin and gateway answers, successes and errors."""
    px = keys.proxy()
    auth = {"Authorization": f"Bearer {px['key']}"}
    responses = {
        "health": http.get("/api/health"),
        "admin 401": http.get("/api/proxy-keys"),
        "admin 404": http.get("/api/no-such-route"),
        "gateway 200": http.post("/v1/chat/completions", json=chat_body(), headers=auth),
        "gateway stream": http.post("/v1/chat/completions", json=chat_body(stream=True), headers=auth),
        "gateway 401": http.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": "Bearer gate_nope"}),
        "provider 429": http.post("/v1/chat/completions", json=chat_body(fu.ERROR_MODEL), headers=auth),
    }
    for what, r in responses.items():
        assert r.headers.get("strict-transport-security") == "max-age=31536000", (what, r.status_code, dict(r.headers))
