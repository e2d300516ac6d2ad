"""The admin API against its own OpenAPI document, with schemathesis.

A fresh Gatehouse is seeded (provider keys pointing at the fake upstream, proxy and
organization keys in every state, users of every role but owner, gateway calls in the request
log, a login session), then schemathesis loads the spec from `GET /api/openapi.yaml` and runs
every operation of it (examples, coverage, fuzzing and stateful phases) with the owner API
key, checking:

- not_a_server_error: no 5xx;
- status_code_conformance: every status is one the operation documents;
- content_type_conformance: every response has a documented content type;
- response_headers_conformance: documented required headers are present and match
  (`Gatehouse-Request-Id`, `Cache-Control: no-store`, `Set-Cookie`, `Content-Disposition`, …);
- response_schema_conformance: every body matches its schema.

Bounded for CI: at most MAX_EXAMPLES cases per operation and phase, a fixed seed (ids the
server generates differ from run to run, so a run is reproducible as far as the server
allows), no example database, and a wall-clock limit of RUN_TIMEOUT seconds.

Excluded operations: none. Every operation of the document runs; destructive ones run against
throw-away data, with these guards (ids, not operations, are held back):

- `POST /api/api-keys/{id}/revoke` is never called with the id of the owner key the run
  authenticates with (schemathesis_hooks.py). Schemathesis reuses ids from `GET /api/api-keys`
  and would otherwise revoke it (allowed while another `api` key exists, and the run creates
  some), turning every later request into a 401 that tests nothing.
- `DELETE /api/provider-keys/{id}` spares one seeded provider key, and
  `POST /api/proxy-keys/{id}/revoke` three active proxy keys bound to it (same hook), so
  that `GET`/`PATCH /api/proxy-keys/{id}` can still succeed late in the run; otherwise the
  early provider key deletions revoke every proxy key and `PATCH` only ever sees `409`. The
  other seeded provider and proxy keys, and those the run creates, are deleted and revoked.
- Schemathesis does not link the proxy key responses (`ProxyKeyWithSpend`, `CreatedProxyKey`)
  to the `/api/proxy-keys/{id}` routes, so the seeded proxy key ids are offered to them as a
  fuzz dictionary (half of the cases; the run's config file).
- `DELETE /api/sessions` runs with the cookie of a throw-away session instead of the bearer key
  (the run's config file), since with a key it can only answer 400.

Everything else is left to the API's own protections: revoking the last `api` key, removing
the last owner and settings that would lock the caller out are `409`, and the key acts as
`admin`, so it cannot touch owners. At the end the owner key must still work, and the
`missing_auth` warning (operations that only ever got 401/403) fails the run.

Debugging and deeper runs: GH_ST_REPORT_DIR=<dir> keeps a HAR file of every request and response;
GH_ST_SEED and GH_ST_MAX_EXAMPLES override the seed and the number of cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import schemathesis  # noqa: F401  (run as a subprocess; imported so a missing install fails loudly)

import fake_upstream as fu
from ghtest import REGISTRY, iso_in, redact

HERE = Path(__file__).resolve().parent
MAX_EXAMPLES = int(os.environ.get("GH_ST_MAX_EXAMPLES") or 25)
SEED = int(os.environ.get("GH_ST_SEED") or 20251127)
RUN_TIMEOUT = 240.0  # seconds; a run takes 70-110 s on 2 busy cores
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])
LOG_TIMEOUT = 10.0
PRICED_OPENAI = "gpt-4o-mini"
PRICED_ANTHROPIC = "claude-3-5-haiku-20241022"


def _password() -> str:
    return "pw-" + uuid.uuid4().hex


def _key_id(key: str) -> str:
    """The 12-character id embedded in a `gate_<kind>_…` key."""
    return key.split("_")[2][:12]


def _gateway(inst, key: str, path: str, body: dict, headers: dict | None = None) -> requests.Response:
    h = {"Authorization": f"Bearer {key}", **(headers or {})}
    return requests.post(inst.base_url + path, json=body, headers=h, verify=inst.verify, timeout=30)


@pytest.fixture(scope="module")
def seeded(inst, upstream) -> dict:
    return seed(inst, upstream)


def seed(inst, upstream) -> dict:
    """Data for the GET-by-id routes, list pages and usage groups to return."""
    r = inst.api("PATCH", "/api/settings", json={"log_bodies": True})
    assert r.status_code == 200, r.text

    # `oa` and the proxy keys in `live` are protected from deletion and revocation (see
    # schemathesis_hooks.py) so that the proxy key routes can succeed all run long; the others
    # are the run's to revoke and delete.
    oa, _ = inst.create_provider_key(name="st-openai", provider="openai", base_url=upstream.base_url)
    an, _ = inst.create_provider_key(name="st-anthropic", provider="anthropic", base_url=upstream.base_url)
    compat, _ = inst.create_provider_key(name="st-compat", provider="openai-compatible",
                                         base_url=upstream.base_url + "/v1")
    inst.create_provider_key(name="st-default-url", provider="openai", secret="short")

    full = dict(
        description="every field", expires_at=iso_in(timedelta(days=30)),
        allowed_models=[PRICED_OPENAI, "other-model"], allowed_ips=["127.0.0.1", "::1/128"],
        rate_limits=[{"metric": "requests", "limit": 1000, "window_seconds": 60},
                     {"metric": "cost_usd", "limit": 2.5, "window_seconds": 3600}],
        budget={"limit_usd": 10, "period": "month"},
    )
    px_oa = inst.create_proxy_key(oa["id"], name="st-proxy-openai")
    px_full = inst.create_proxy_key(oa["id"], name="st-proxy-full", **full)
    px_total = inst.create_proxy_key(oa["id"], name="st-proxy-total-budget", budget={"limit_usd": 1, "period": "total"})
    px_an = inst.create_proxy_key(an["id"], name="st-proxy-anthropic", description="seeded")
    px_compat = inst.create_proxy_key(compat["id"], name="st-proxy-compat", **full)
    px_revoked = inst.create_proxy_key(oa["id"], name="st-proxy-revoked")
    live = [px_oa, px_full, px_total]
    throwaway = [px_an, px_compat, px_revoked]
    for px in live + throwaway:
        REGISTRY.add_gatehouse_key(px["key"], "proxy key (test_schemathesis)")
    assert inst.api("POST", f"/api/proxy-keys/{px_revoked['id']}/revoke").status_code == 200

    # Gateway calls, so the request log, usage groups and exports have rows of every shape.
    calls = [
        (px_oa, "/v1/chat/completions", {"model": PRICED_OPENAI, "messages": [{"role": "user", "content": "hi"}]},
         {"Helicone-User-Id": "st-user-1", "Helicone-Property-Team": "qa", "Helicone-Session-Id": "s-1"}),
        (px_oa, "/v1/chat/completions",
         {"model": "fake-unknown-model", "messages": [{"role": "user", "content": "hi"}], "user": "st-user-2"}, None),
        (px_oa, "/v1/chat/completions",
         {"model": PRICED_OPENAI, "stream": True, "messages": [{"role": "user", "content": "hi"}]}, None),
        (px_oa, "/v1/chat/completions", {"model": fu.ERROR_MODEL, "messages": [{"role": "user", "content": "hi"}]},
         None),
        (px_oa, "/v1/chat/completions", {"model": PRICED_OPENAI, "messages": [{"role": "user", "content": "hi"}]},
         {"Helicone-Omit-Request": "true", "Helicone-Omit-Response": "true"}),
        (px_an, "/v1/messages",
         {"model": PRICED_ANTHROPIC, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}, None),
        (px_compat, "/v1/chat/completions", {"model": PRICED_OPENAI, "messages": [{"role": "user", "content": "hi"}]},
         None),
    ]
    for px, path, body, headers in calls:
        _gateway(inst, px["key"], path, body, headers)  # any status: failures are log rows too
    deadline = time.monotonic() + LOG_TIMEOUT
    while True:
        r = inst.api("GET", "/api/requests?limit=1000")
        assert r.status_code == 200, r.text
        if len(r.json()["data"]) >= len(calls) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(r.json()["data"]) >= len(calls), f"only {len(r.json()['data'])} of {len(calls)} calls were logged"

    # Organization keys: an API key and a read-only key (one with limits), one revoked.
    inst.create_org_key("api", name="st-api")
    inst.create_org_key("read", name="st-read")
    r = inst.api("POST", "/api/api-keys", json={"name": "st-read-limited", "kind": "read", "description": "d",
                                                "expires_at": iso_in(timedelta(days=7)),
                                                "allowed_ips": ["10.0.0.0/8"]})
    assert r.status_code == 201, r.text
    revoked = inst.create_org_key("read", name="st-read-revoked")
    assert inst.api("POST", f"/api/api-keys/{revoked['id']}/revoke").status_code == 200

    # Users of every role an API key may grant; one of them logs in for DELETE /api/sessions.
    users = {}
    for role in ("admin", "member", "viewer"):
        email, password = f"st-{role}-{uuid.uuid4().hex[:8]}@example.com", _password()
        REGISTRY.add_canary(password, "gatehouse", f"{role} password (test_schemathesis)")
        r = inst.api("POST", "/api/users", json={"email": email, "role": role, "password": password})
        assert r.status_code == 201, r.text
        users[role] = (email, password)
    email, password = users["member"]
    r = requests.post(inst.base_url + "/api/sessions", json={"email": email, "password": password},
                      verify=inst.verify, timeout=10)
    assert r.status_code == 201, r.text
    session = r.cookies.get("gatehouse_session")
    assert session, "login set no session cookie"
    REGISTRY.add_canary(session, "gatehouse", "session token (test_schemathesis)")
    return {
        "session": session,
        "proxy_key_ids": [px["id"] for px in live + throwaway],
        "protected": {
            "DELETE /api/provider-keys/{id}": [oa["id"]],
            "POST /api/proxy-keys/{id}/revoke": [px["id"] for px in live],
            "POST /api/api-keys/{id}/revoke": [_key_id(inst.owner_key)],
        },
    }


# Written to the run's temporary directory (schemathesis `--config-file`); {placeholders} are
# filled in by the test, ${VARS} by schemathesis from its environment (kept off the disk).
CONFIG_TEMPLATE = r"""
[warnings]
# Operations that answer only 401/403 mean the run lost its credential (see
# schemathesis_hooks.py): fail instead of reporting a pass that tested nothing.
fail-on = ["missing_auth"]

# Proxy key ids for the /api/proxy-keys/{{id}} routes, half of the time. Schemathesis does not
# connect the `ProxyKeyWithSpend` / `CreatedProxyKey` responses to these routes by itself, so
# without them those routes would only ever see unknown ids (404).
[dictionaries.proxy_key_ids]
values = {proxy_key_ids}

[[operations]]
include-path-regex = '^/api/proxy-keys/\{{id\}}'
parameters = {{ "path.id" = {{ dictionary = "proxy_key_ids", probability = 0.5 }} }}

# DELETE /api/sessions only ends a cookie session: with the bearer key it is always 400. Give it
# the session of a throw-away user instead, so the 204 (cookie cleared) is checked too. An
# operation's headers override the global `-H Authorization`, and Gatehouse ignores a `Basic`
# Authorization, so the cookie authenticates. The first logout ends the session; later cases
# get the documented 401.
[[operations]]
include-operation-id = "deleteSession"
headers = {{ Authorization = "Basic Og==", Cookie = "gatehouse_session=${{GH_ST_SESSION}}", Origin = "{origin}" }}
"""


def test_admin_api_conforms_to_its_openapi_document(inst, seeded, tmp_path):
    owner_key_id = _key_id(inst.owner_key)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG_TEMPLATE.format(proxy_key_ids=json.dumps(seeded["proxy_key_ids"]), origin=inst.base_url))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "SCHEMATHESIS_", "GH_ST_"))}
    env.update({
        "SCHEMATHESIS_HOOKS": str(HERE / "schemathesis_hooks.py"),
        "GH_ST_PROTECTED_IDS": json.dumps(seeded["protected"]),
        "GH_ST_SESSION": seeded["session"],
        "NO_COLOR": "1",
    })
    cmd = [
        sys.executable, "-m", "schemathesis.cli",
        "--config-file", str(config),
        "run", f"{inst.base_url}/api/openapi.yaml",
        "--url", inst.base_url,
        "-H", f"Authorization: Bearer {inst.owner_key}",
        "--tls-verify", str(inst.verify),
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--generation-database", "none",
        "--request-timeout", "10",
        "--workers", "1",
        "--no-color",
    ]
    if os.environ.get("GH_ST_REPORT_DIR"):  # debugging: keep every request and response (HAR)
        cmd += ["--report", "har", "--report-dir", os.environ["GH_ST_REPORT_DIR"]]
    out = inst.logs / "schemathesis.out"
    REGISTRY.add_output(out)  # the canary scan checks it: no secret in what schemathesis printed
    start = time.monotonic()
    with open(out, "wb") as fo:
        try:
            proc = subprocess.run(cmd, stdout=fo, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                  timeout=RUN_TIMEOUT)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    elapsed = time.monotonic() - start
    text = redact(out.read_text(errors="replace"))
    print(f"\nschemathesis finished in {elapsed:.1f}s with exit code {rc}")
    # From the first "=== WARNINGS/FAILURES/SUMMARY ===" banner on (the progress lines before
    # it only name the phases).
    summary = text[text.find("=" * 10):] if "=" * 10 in text else text
    assert rc is not None, f"schemathesis did not finish within {RUN_TIMEOUT}s:\n{text[-20000:]}"
    assert rc == 0, f"schemathesis exit code {rc}:\n{summary[-60000:]}"
    print(summary)

    # The run must not have locked itself out (it would have passed vacuously on 401s).
    r = inst.api("GET", "/api/api-keys")
    assert r.status_code == 200, f"the owner key no longer works after the run: {r.status_code} {r.text}"
    [owner] = [k for k in r.json()["data"] if k["id"] == owner_key_id]
    assert owner["status"] == "active", owner
    assert inst.running, "gatehouse exited during the schemathesis run"
