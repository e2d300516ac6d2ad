"""Rate limits and budgets end to end: a real `gatehouse serve` over TLS in front of the fake
provider (fake_upstream.py), driven over raw HTTP (and the OpenAI SDK for the 429 mapping).

Covers the exact request window through HTTP (429 body and RateLimit-* / Retry-After headers),
a budget under 50 concurrent requests, spend shown by the admin API, restart (spend and windows
rebuilt from the request log; SIGTERM flushes it), Helicone-RateLimit-Policy (per user, only
tightening, malformed -> 400), PATCHed limits applying on the next request, and
model_not_priced for keys whose cost must be limited.

Costs: `--pricing` adds LIMIT_MODEL at 1000 USD per 1M tokens for input, cached input and
output, i.e. 1,000 micro-dollars per token. The fake reports 13 prompt (4 cached) + 7 completion
tokens for every chat call, so each call costs exactly 20 tokens = $0.02. The reservation is
ceil(body_bytes / 4) + max_tokens tokens, computed below from the exact bytes sent.
"""

from __future__ import annotations

import json
import math
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import openai
import openai._base_client as _openai_base
import pytest
import requests

import fake_upstream as fu
from ghtest import REQUEST_ID_HEADER, parse_time

httpx = getattr(_openai_base, "httpx2", None) or getattr(_openai_base, "httpx")

LIMIT_MODEL = "gh-limit-test-model"
UNPRICED_MODEL = "fake-unknown-model-x1"
FREE_MODEL = "gpt-4o-mini"  # priced in the shipped table; used where cost does not matter
MICROS_PER_TOKEN = 1000  # 1000 USD per 1M tokens
PRICING = {"models": {LIMIT_MODEL: {"input": 1000, "output": 1000, "max_output_tokens": 1000}}}
ACTUAL_TOKENS = fu.OPENAI_PROMPT_TOKENS + fu.OPENAI_COMPLETION_TOKENS  # cached tokens are priced as input
ACTUAL_MICROS = ACTUAL_TOKENS * MICROS_PER_TOKEN  # 20,000 = $0.02
MAX_TOKENS = fu.OPENAI_COMPLETION_TOKENS
POLICY_HEADER = "Helicone-RateLimit-Policy"
RL_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy")

pytestmark = pytest.mark.usefixtures("upstream_stays_clean")


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pricing_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("pricing") / "pricing.json"
    p.write_text(json.dumps(PRICING))
    return p


@pytest.fixture(scope="module")
def inst(module_gatehouse, pricing_file):
    return module_gatehouse(True, "--pricing", str(pricing_file))


@pytest.fixture(scope="module")
def provider(inst, upstream) -> dict:
    pk, _ = inst.create_provider_key(name="fake-openai-limits", provider="openai", base_url=upstream.base_url)
    return pk


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def make_key(inst, provider_id: str, **fields) -> dict:
    return inst.create_proxy_key(provider_id, name=f"limits-{time.monotonic_ns() % 10**9}", **fields)


def body_bytes(model: str = LIMIT_MODEL, *, max_tokens: int | None = MAX_TOKENS, user: str | None = None,
               stream: bool = False) -> bytes:
    obj: dict = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens is not None:
        obj["max_tokens"] = max_tokens
    if user is not None:
        obj["user"] = user
    if stream:
        obj["stream"] = True
    return json.dumps(obj, separators=(",", ":")).encode()


def reservation_micros(data: bytes, max_tokens: int = MAX_TOKENS) -> int:
    """The worst case Gatehouse reserves for a non-streamed LIMIT_MODEL call: ceil(bytes/4) + max_tokens."""
    return (math.ceil(len(data) / 4) + max_tokens) * MICROS_PER_TOKEN


def chat(inst, key: str, *, data: bytes | None = None, headers: dict | None = None,
         session=None, stream: bool = False, **body) -> requests.Response:
    data = data if data is not None else body_bytes(stream=stream, **body)
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})}
    return (session or requests).post(inst.base_url + "/v1/chat/completions", data=data, headers=h,
                                      verify=inst.verify, timeout=30, stream=stream)


def assert_ok(resp: requests.Response, where: str) -> None:
    assert resp.status_code == 200, f"{where}: expected 200, got {resp.status_code}: {resp.text[:300]}"


def assert_limit_error(resp: requests.Response, etype: str, where: str, *, retry_after: bool = True) -> dict:
    """The OpenAI-shaped 429 with the RateLimit-* headers."""
    assert resp.status_code == 429, f"{where}: expected 429, got {resp.status_code}: {resp.text[:300]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    assert resp.headers.get(REQUEST_ID_HEADER), f"{where}: no {REQUEST_ID_HEADER}"
    body = resp.json()
    assert set(body) == {"error"}, f"{where}: not the OpenAI error shape: {body}"
    err = body["error"]
    assert err.get("type") == etype, f"{where}: {body}"
    assert err.get("code") == etype, f"{where}: {body}"
    assert isinstance(err.get("message"), str) and err["message"], f"{where}: {body}"
    assert "param" in err and err["param"] is None, f"{where}: {body}"
    for h in RL_HEADERS:
        assert resp.headers.get(h), f"{where}: 429 without {h} (headers: {dict(resp.headers)})"
    if retry_after:
        ra = resp.headers.get("Retry-After")
        assert ra is not None and ra.isdigit() and int(ra) >= 1, f"{where}: bad Retry-After {ra!r}"
    return err


def is_policy(text, metric: str, limit, window: int) -> bool:
    """A key limit's RateLimit-Policy: `requests;w=60` today, or the draft's `<limit>;w=<seconds>`."""
    return text == f"{metric};w={window}" or (text or "").startswith(f"{limit};w={window}")


def rl(resp: requests.Response) -> dict:
    return {h: resp.headers.get(h) for h in RL_HEADERS}


def get_key(inst, key_id: str) -> dict:
    r = inst.api("GET", f"/api/proxy-keys/{key_id}")
    assert r.status_code == 200, r.text
    return r.json()


def patch_key(inst, key_id: str, **fields) -> dict:
    r = inst.api("PATCH", f"/api/proxy-keys/{key_id}", json=fields)
    assert r.status_code == 200, f"PATCH: {r.status_code} {r.text}"
    return r.json()


def wait_spent(inst, key_id: str, micros: int, timeout: float = 5.0) -> dict:
    """The key once its spent_usd equals `micros` (settlement runs when the response body ends)."""
    deadline = time.monotonic() + timeout
    while True:
        k = get_key(inst, key_id)
        if k["spent_usd"] is not None and abs(k["spent_usd"] * 1e6 - micros) < 0.5:
            return k
        if time.monotonic() > deadline:
            raise AssertionError(f"spent_usd {k['spent_usd']} never reached {micros / 1e6} (key {k})")
        time.sleep(0.05)


def next_month_start(now: datetime) -> datetime:
    return datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=timezone.utc)


# --------------------------------------------------------------------------------------------
# Request windows through HTTP
# --------------------------------------------------------------------------------------------


def test_request_window_boundary_over_http(inst, provider, upstream):
    key = make_key(inst, provider["id"], rate_limits=[{"metric": "requests", "limit": 3, "window_seconds": 2}])
    s = requests.Session()
    n0 = upstream.count()
    for i in range(3):
        r = chat(inst, key["key"], session=s, model=FREE_MODEL)
        assert_ok(r, f"request {i + 1} of 3")
        h = rl(r)
        assert h["RateLimit-Limit"] == "3", h
        assert h["RateLimit-Remaining"] == str(2 - i), h
        assert is_policy(h["RateLimit-Policy"], "requests", 3, 2), h
        assert 0 <= int(h["RateLimit-Reset"]) <= 2, h
    r = chat(inst, key["key"], session=s, model=FREE_MODEL)
    err = assert_limit_error(r, "rate_limit_exceeded", "4th request")
    assert r.headers["RateLimit-Limit"] == "3"
    assert r.headers["RateLimit-Remaining"] == "0"
    assert is_policy(r.headers["RateLimit-Policy"], "requests", 3, 2), r.headers
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= 2, r.headers
    assert 0 <= int(r.headers["RateLimit-Reset"]) <= 2, r.headers
    assert upstream.count() - n0 == 3, "a refused request reached the provider"
    # Still inside the window: still refused, and refusals do not count.
    assert_limit_error(chat(inst, key["key"], session=s, model=FREE_MODEL), "rate_limit_exceeded", "5th request")
    # Retry-After is honest: after waiting it, the request is admitted.
    time.sleep(retry)
    r = chat(inst, key["key"], session=s, model=FREE_MODEL)
    assert_ok(r, f"after waiting Retry-After={retry}")
    assert r.headers.get("RateLimit-Limit") == "3"
    # Once the whole window has passed, the full quota is back.
    time.sleep(2.05)
    for i in range(3):
        assert_ok(chat(inst, key["key"], session=s, model=FREE_MODEL), f"new window, request {i + 1}")
    assert_limit_error(chat(inst, key["key"], session=s, model=FREE_MODEL), "rate_limit_exceeded", "new window, 4th")


def test_openai_sdk_sees_rate_limit_error(inst, provider):
    key = make_key(inst, provider["id"], rate_limits=[{"metric": "requests", "limit": 1, "window_seconds": 60}])
    client = openai.OpenAI(base_url=f"{inst.base_url}/v1", api_key=key["key"], max_retries=0,
                           http_client=httpx.Client(verify=ssl.create_default_context(cafile=str(inst.verify)), timeout=30.0))
    try:
        client.chat.completions.create(model=FREE_MODEL, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model=FREE_MODEL, messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 429
        assert e.value.code == "rate_limit_exceeded"
        assert e.value.response.headers.get("Retry-After")
    finally:
        client.close()


def test_token_limit_reserves_worst_case_and_settles(inst, provider):
    # tokens: 60 per 60 s. Reservation = ceil(bytes/4) + max_tokens; actual = 20 tokens.
    data = body_bytes(FREE_MODEL)
    reserved = math.ceil(len(data) / 4) + MAX_TOKENS
    assert ACTUAL_TOKENS < reserved <= 60
    key = make_key(inst, provider["id"], rate_limits=[{"metric": "tokens", "limit": 60, "window_seconds": 60}])
    s = requests.Session()
    admitted = 0
    for _ in range(6):
        r = chat(inst, key["key"], data=data, session=s)
        if r.status_code != 200:
            assert_limit_error(r, "rate_limit_exceeded", "token limit")
            assert is_policy(r.headers["RateLimit-Policy"], "tokens", 60, 60), rl(r)
            break
        admitted += 1
        assert is_policy(r.headers.get("RateLimit-Policy"), "tokens", 60, 60), rl(r)
        assert r.headers.get("RateLimit-Remaining") == str(60 - (admitted - 1) * ACTUAL_TOKENS - reserved), rl(r)
        time.sleep(0.2)  # settlement runs just after the body is sent
    expected = 1 + (60 - reserved) // ACTUAL_TOKENS  # sequential: admitted while used + reserved <= 60
    assert admitted == expected, f"admitted {admitted}, expected {expected} (reservation {reserved} tokens)"


# --------------------------------------------------------------------------------------------
# Budgets
# --------------------------------------------------------------------------------------------


def test_budget_under_concurrency(inst, provider, upstream):
    budget_micros = 500_000  # $0.50
    data = body_bytes()
    reserve = reservation_micros(data)
    assert reserve >= ACTUAL_MICROS, "the test needs the reservation to be an upper bound"
    key = make_key(inst, provider["id"], budget={"limit_usd": budget_micros / 1e6, "period": "month"})
    n0 = upstream.count()

    n = 50
    barrier = threading.Barrier(n)

    def call(_):
        barrier.wait(10)
        return chat(inst, key["key"], data=data)

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(call, range(n)))
    ok = [r for r in results if r.status_code == 200]
    refused = [r for r in results if r.status_code != 200]
    for r in refused:
        assert_limit_error(r, "insufficient_quota", "concurrent budget refusal")
    for r in ok:
        assert r.json()["usage"]["total_tokens"] == ACTUAL_TOKENS
        assert r.headers.get("RateLimit-Policy") == "0.5;w=month;u=usd", rl(r)
    successes = len(ok)
    # Upper bound: actual spend never passes the budget. Lower bound: a refusal needs
    # spent + in flight + one reservation > budget, so at least floor(budget / reservation)
    # were admitted even if all 50 arrived at once.
    upper = budget_micros // ACTUAL_MICROS
    lower = budget_micros // reserve
    print(f"concurrent: {successes} admitted of {n}, bounds {lower}..{upper}, reservation {reserve} micros")
    assert successes * ACTUAL_MICROS <= budget_micros, f"{successes} successes overspent the budget"
    assert lower <= successes <= upper, f"{successes} successes, expected {lower}..{upper} (reservation {reserve})"
    assert successes >= 0.6 * budget_micros / ACTUAL_MICROS
    assert upstream.count() - n0 == successes, "refused requests must not reach the provider"

    k = wait_spent(inst, key["id"], successes * ACTUAL_MICROS)
    assert k["spent_usd"] <= k["budget"]["limit_usd"]
    assert abs(k["remaining_usd"] - (k["budget"]["limit_usd"] - k["spent_usd"])) < 1e-9, k
    now = datetime.now(timezone.utc)
    assert parse_time(k["period_end"]) == next_month_start(now), k

    # Sequential calls until the budget is exhausted: admitted while spent + reservation <= budget.
    s = requests.Session()
    for _ in range(upper + 1):
        r = chat(inst, key["key"], data=data, session=s)
        if r.status_code != 200:
            break
        successes += 1
        wait_spent(inst, key["id"], successes * ACTUAL_MICROS)  # settled before the next one
    err = assert_limit_error(r, "insufficient_quota", "budget exhausted")
    assert r.headers["RateLimit-Policy"] == "0.5;w=month;u=usd"
    assert r.headers["RateLimit-Limit"] == "0.5"
    remaining = float(r.headers["RateLimit-Remaining"])
    assert 0 <= remaining < reserve / 1e6
    retry = int(r.headers["Retry-After"])
    until_end = (next_month_start(datetime.now(timezone.utc)) - datetime.now(timezone.utc)).total_seconds()
    assert abs(retry - until_end) <= 5, f"Retry-After {retry} vs {until_end:.0f} s to the end of the month"
    assert successes * ACTUAL_MICROS <= budget_micros
    assert successes * ACTUAL_MICROS > budget_micros - reserve, f"stopped early: {successes} successes"
    k = wait_spent(inst, key["id"], successes * ACTUAL_MICROS)
    assert abs(k["remaining_usd"] - (budget_micros - successes * ACTUAL_MICROS) / 1e6) < 1e-9, k
    # Still refused.
    assert_limit_error(chat(inst, key["key"], session=s), "insufficient_quota", "after exhaustion")
    assert upstream.count() - n0 == successes


def test_streamed_response_settles_budget(inst, provider):
    key = make_key(inst, provider["id"], budget={"limit_usd": 1, "period": "total"})
    r = chat(inst, key["key"], stream=True)
    assert_ok(r, "streamed call")
    text = b"".join(r.iter_content(None))
    assert b"[DONE]" in text
    k = wait_spent(inst, key["id"], ACTUAL_MICROS)
    assert abs(k["remaining_usd"] - (1 - ACTUAL_MICROS / 1e6)) < 1e-9, k
    assert k["period_end"] is None, k


def test_openai_sdk_sees_insufficient_quota(inst, provider):
    key = make_key(inst, provider["id"], budget={"limit_usd": 0, "period": "day"})
    client = openai.OpenAI(base_url=f"{inst.base_url}/v1", api_key=key["key"], max_retries=0,
                           http_client=httpx.Client(verify=ssl.create_default_context(cafile=str(inst.verify)), timeout=30.0))
    try:
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model=LIMIT_MODEL, messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=5)
        assert e.value.code == "insufficient_quota"
    finally:
        client.close()


def test_model_not_priced_on_cost_limited_keys(inst, provider, upstream):
    cases = {
        "budget": dict(budget={"limit_usd": 5, "period": "month"}),
        "cost_usd limit": dict(rate_limits=[{"metric": "cost_usd", "limit": 1, "window_seconds": 60}]),
    }
    n0 = upstream.count()
    for what, fields in cases.items():
        key = make_key(inst, provider["id"], **fields)
        r = chat(inst, key["key"], model=UNPRICED_MODEL)
        assert r.status_code == 403, f"{what}: {r.status_code} {r.text}"
        err = r.json()["error"]
        assert err["code"] == "model_not_priced", err
        assert err["type"] == "permission_denied", err
        assert_ok(chat(inst, key["key"], model=LIMIT_MODEL), f"{what}: priced model")
    # A cents policy needs a price too.
    plain = make_key(inst, provider["id"])
    r = chat(inst, plain["key"], model=UNPRICED_MODEL, headers={POLICY_HEADER: "100;w=60;u=cents"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_priced", r.text
    # Request/token limits do not need a price.
    counted = make_key(inst, provider["id"], rate_limits=[{"metric": "requests", "limit": 5, "window_seconds": 60},
                                                          {"metric": "tokens", "limit": 100000, "window_seconds": 60}])
    assert_ok(chat(inst, counted["key"], model=UNPRICED_MODEL), "unpriced model, request/token limits")
    assert_ok(chat(inst, plain["key"], model=UNPRICED_MODEL), "unpriced model, no limits")
    assert upstream.count() - n0 == 4


# --------------------------------------------------------------------------------------------
# Helicone-RateLimit-Policy
# --------------------------------------------------------------------------------------------


def test_policy_header_is_per_user(inst, provider, upstream):
    key = make_key(inst, provider["id"])
    s = requests.Session()
    pol = {POLICY_HEADER: "2;w=60;s=user"}
    n0 = upstream.count()
    for user in ("alice", "bob"):
        h = {**pol, "Helicone-User-Id": user}
        for i in range(2):
            r = chat(inst, key["key"], headers=h, session=s, model=FREE_MODEL)
            assert_ok(r, f"{user} request {i + 1}")
            assert r.headers.get("RateLimit-Policy") == "2;w=60;s=user", rl(r)
            assert r.headers.get("RateLimit-Remaining") == str(1 - i), rl(r)
        r = chat(inst, key["key"], headers=h, session=s, model=FREE_MODEL)
        assert_limit_error(r, "rate_limit_exceeded", f"{user} 3rd")
        assert r.headers["RateLimit-Policy"] == "2;w=60;s=user"
        assert r.headers["RateLimit-Limit"] == "2"
        assert 58 <= int(r.headers["Retry-After"]) <= 60
    # The user id may also come from the body's `user` field.
    for i in range(2):
        assert_ok(chat(inst, key["key"], headers=pol, session=s, model=FREE_MODEL, user="carol"), f"carol {i + 1}")
    assert_limit_error(chat(inst, key["key"], headers=pol, session=s, model=FREE_MODEL, user="carol"),
                       "rate_limit_exceeded", "carol 3rd")
    # Without the header the key itself is unlimited.
    assert_ok(chat(inst, key["key"], session=s, model=FREE_MODEL, user="alice"), "no policy header")
    assert upstream.count() - n0 == 7


def test_policy_header_cannot_loosen(inst, provider):
    key = make_key(inst, provider["id"], rate_limits=[{"metric": "requests", "limit": 2, "window_seconds": 60}])
    s = requests.Session()
    h = {POLICY_HEADER: "100;w=60"}
    for i in range(2):
        assert_ok(chat(inst, key["key"], headers=h, session=s, model=FREE_MODEL), f"request {i + 1}")
    r = chat(inst, key["key"], headers=h, session=s, model=FREE_MODEL)
    assert_limit_error(r, "rate_limit_exceeded", "3rd request with a looser policy")
    assert is_policy(r.headers["RateLimit-Policy"], "requests", 2, 60), rl(r)
    assert r.headers["RateLimit-Limit"] == "2"
    r = chat(inst, key["key"], headers={POLICY_HEADER: "1000;w=1;s=user", "Helicone-User-Id": "new"}, session=s,
             model=FREE_MODEL)
    assert_limit_error(r, "rate_limit_exceeded", "per-user policy on a full key")


MALFORMED_POLICIES = [
    "", "-1;w=60", "0;w=60", "abc;w=60", "100", "100;w=0", "100;w=1.5", "100;w=abc", "100;w=60;x=1",
    "100;w=60;w=30", "100;w=60;u=dollars", "100;w=60;s=team", "1.5;w=60",
    "100;" + " " * 200 + "w=60",  # valid once trimmed, but longer than 200 bytes
]


@pytest.mark.parametrize("policy", MALFORMED_POLICIES)
def test_malformed_policy_is_400(inst, provider, upstream, policy):
    key = make_key(inst, provider["id"], rate_limits=[{"metric": "requests", "limit": 1, "window_seconds": 60}])
    n0 = upstream.count()
    r = chat(inst, key["key"], headers={POLICY_HEADER: policy}, model=FREE_MODEL)
    assert r.status_code == 400, f"{policy!r}: {r.status_code} {r.text[:300]}"
    err = r.json()["error"]
    assert err["code"] == "invalid_rate_limit_policy", err
    assert err["type"] == "invalid_request_error", err
    assert upstream.count() == n0
    # The refused request took no slot.
    assert_ok(chat(inst, key["key"], model=FREE_MODEL), "valid request after a malformed policy")


def test_malformed_policy_is_400_on_an_unlimited_key(inst, provider):
    key = make_key(inst, provider["id"])
    r = chat(inst, key["key"], headers={POLICY_HEADER: "100;w=60;u=dollars"}, model=FREE_MODEL)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_rate_limit_policy", r.text


# --------------------------------------------------------------------------------------------
# Editing limits
# --------------------------------------------------------------------------------------------


def test_patched_limits_apply_on_the_next_request(inst, provider):
    key = make_key(inst, provider["id"], rate_limits=[{"metric": "requests", "limit": 1, "window_seconds": 60}])
    s = requests.Session()
    assert_ok(chat(inst, key["key"], session=s, model=FREE_MODEL), "first")
    assert_limit_error(chat(inst, key["key"], session=s, model=FREE_MODEL), "rate_limit_exceeded", "second")
    # Raise the limit: the request already made still counts in the same window.
    k = patch_key(inst, key["id"], rate_limits=[{"metric": "requests", "limit": 3, "window_seconds": 60}])
    assert k["rate_limits"] == [{"metric": "requests", "limit": 3, "window_seconds": 60}]
    for i in range(2):
        r = chat(inst, key["key"], session=s, model=FREE_MODEL)
        assert_ok(r, f"after raising, request {i + 1}")
        assert r.headers.get("RateLimit-Limit") == "3"
    r = chat(inst, key["key"], session=s, model=FREE_MODEL)
    assert_limit_error(r, "rate_limit_exceeded", "after raising, 3rd")
    assert r.headers["RateLimit-Limit"] == "3"
    # Remove every limit.
    patch_key(inst, key["id"], rate_limits=[])
    r = chat(inst, key["key"], session=s, model=FREE_MODEL)
    assert_ok(r, "no limits")
    assert r.headers.get("RateLimit-Limit") is None, rl(r)
    # A new window is rebuilt from the request log: the call just made (without limits)
    # already fills "1 per 30 s".
    patch_key(inst, key["id"], rate_limits=[{"metric": "requests", "limit": 1, "window_seconds": 30}])
    assert_limit_error(chat(inst, key["key"], session=s, model=FREE_MODEL), "rate_limit_exceeded", "new window rebuilt")
    # A budget set by PATCH applies at once, and removing it lifts it.
    patch_key(inst, key["id"], rate_limits=[], budget={"limit_usd": 0, "period": "total"})
    assert_limit_error(chat(inst, key["key"], session=s), "insufficient_quota", "zero budget", retry_after=False)
    k = patch_key(inst, key["id"], budget=None)
    assert k["budget"] is None and k["spent_usd"] is None
    assert_ok(chat(inst, key["key"], session=s), "budget removed")


# --------------------------------------------------------------------------------------------
# Restart
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fresh(gatehouse, pricing_file, upstream):
    inst = gatehouse(True, "--pricing", str(pricing_file))
    pk, _ = inst.create_provider_key(name="fake-openai-restart", provider="openai", base_url=upstream.base_url)
    return inst, pk


def test_restart_keeps_spend_and_windows(fresh):
    inst, pk = fresh
    data = body_bytes()
    reserve = reservation_micros(data)
    budget_micros = 50_000
    assert 2 * ACTUAL_MICROS + reserve > budget_micros >= ACTUAL_MICROS + reserve
    spender = make_key(inst, pk["id"], budget={"limit_usd": budget_micros / 1e6, "period": "total"})
    windowed = make_key(inst, pk["id"], rate_limits=[{"metric": "requests", "limit": 3, "window_seconds": 60}])
    s = requests.Session()
    for i in range(2):
        assert_ok(chat(inst, spender["key"], data=data, session=s), f"spend {i + 1}")
        wait_spent(inst, spender["id"], (i + 1) * ACTUAL_MICROS)
    assert_limit_error(chat(inst, spender["key"], data=data, session=s), "insufficient_quota", "budget before restart",
                       retry_after=False)
    for i in range(2):
        assert_ok(chat(inst, windowed["key"], session=s, model=FREE_MODEL), f"windowed {i + 1}")
    before = wait_spent(inst, spender["id"], 2 * ACTUAL_MICROS)
    s.close()

    # SIGTERM straight away: the request-log writer must flush on shutdown.
    inst.restart()

    after = get_key(inst, spender["id"])
    assert after["spent_usd"] == before["spent_usd"], f"spend lost in the restart: {before} -> {after}"
    assert after["remaining_usd"] == before["remaining_usd"]
    r = chat(inst, spender["key"], data=data)
    err = assert_limit_error(r, "insufficient_quota", "budget after restart", retry_after=False)
    assert r.headers.get("Retry-After") is None, "a total budget never resets"
    # The window still holds the two requests made before the restart.
    assert_ok(chat(inst, windowed["key"], model=FREE_MODEL), "windowed 3rd (after restart)")
    r = chat(inst, windowed["key"], model=FREE_MODEL)
    assert_limit_error(r, "rate_limit_exceeded", "windowed 4th (after restart)")
    assert r.headers["RateLimit-Limit"] == "3"


def test_budget_set_later_counts_the_period_spend(fresh):
    """Spend shown and enforced after a budget is added (or its period changed) by PATCH must be
    the spend of the period in the request log: the same value a restart rebuilds."""
    inst, pk = fresh
    key = make_key(inst, pk["id"])
    s = requests.Session()
    for i in range(3):
        assert_ok(chat(inst, key["key"], session=s), f"unbudgeted call {i + 1}")
    time.sleep(0.6)  # let the log writer persist them
    k = patch_key(inst, key["id"], budget={"limit_usd": 1, "period": "month"})
    live = k["spent_usd"]
    s.close()
    inst.restart()
    restored = get_key(inst, key["id"])["spent_usd"]
    assert abs(restored - 3 * ACTUAL_MICROS / 1e6) < 1e-9, f"restored spend {restored}"
    assert live == restored, (
        f"spent_usd right after PATCHing a budget was {live}, but {restored} after a restart: the ledger does not "
        f"rebuild the period's spend when a budget is added or changed")


def test_restart_restores_more_than_one_page_of_history(fresh):
    """The request log is read back in pages of 1000: a window holding more must be rebuilt whole."""
    inst, pk = fresh
    limit, made = 1030, 1020
    key = make_key(inst, pk["id"], rate_limits=[{"metric": "requests", "limit": limit, "window_seconds": 120}])
    data = body_bytes(FREE_MODEL)
    workers = 10

    def worker(n: int) -> int:
        ok = 0
        with requests.Session() as s:
            for _ in range(n):
                ok += chat(inst, key["key"], data=data, session=s).status_code == 200
        return ok

    with ThreadPoolExecutor(workers) as pool:
        oks = sum(pool.map(worker, [made // workers] * workers))
    assert oks == made
    inst.restart()
    s = requests.Session()
    left = 0
    for _ in range(limit - made + 5):
        r = chat(inst, key["key"], data=data, session=s)
        if r.status_code != 200:
            assert_limit_error(r, "rate_limit_exceeded", "after restart")
            break
        left += 1
    assert left == limit - made, f"{left} requests admitted after the restart, expected {limit - made}"


def test_budgeted_key_can_list_models(inst, provider):
    """GET /v1/models names no model and costs nothing."""
    key = make_key(inst, provider["id"], budget={"limit_usd": 1, "period": "month"})
    r = requests.get(inst.base_url + "/v1/models", headers={"Authorization": f"Bearer {key['key']}"},
                     verify=inst.verify, timeout=30)
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
