"""The admin API (/api): every route, its validation, authentication and authorisation."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta

import pytest
import yaml

from ghtest import (
    API_KEY_RE,
    PROXY_KEY_RE,
    READ_KEY_RE,
    REQUEST_ID_HEADER,
    assert_bad_input,
    assert_error,
    iso_in,
    new_provider_secret,
    parse_time,
    tamper_key,
)

PROVIDER_FIELDS = {"id", "name", "provider", "base_url", "last4", "created_at"}
PROXY_FIELDS = {
    "id", "kind", "name", "description", "provider_key_id", "expires_at", "allowed_models", "allowed_ips",
    "rate_limits", "budget", "status", "created_at", "revoked_at",
}
ORG_KEY_FIELDS = {"id", "kind", "name", "status", "created_at", "revoked_at"}


@pytest.fixture(scope="module")
def pk(inst):
    """A provider key shared by the proxy-key tests."""
    obj, _ = inst.create_provider_key(name="shared-openai")
    return obj


def assert_no_secret_fields(obj: dict):
    """Listed/fetched keys never carry the key text or anything hash-like."""
    assert "key" not in obj, f"key text returned outside creation: {sorted(obj)}"
    for field in obj:
        assert not re.search(r"hash|secret|api_key|ciphertext", field, re.I), f"suspicious field {field!r}"


def contract_view(obj: dict) -> dict:
    """The contract's proxy key fields (servers may add informational ones, e.g. spend)."""
    return {k: obj.get(k) for k in PROXY_FIELDS}


def ids(resp) -> list[str]:
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("data"), list), f"expected {{'data': [...]}}: {body}"
    return [o["id"] for o in body["data"]]


# --------------------------------------------------------------------------------------------
# Provider keys
# --------------------------------------------------------------------------------------------


def test_create_provider_key(inst):
    secret = new_provider_secret()
    r = inst.api("POST", "/api/provider-keys", json={"name": "openai-main", "provider": "openai", "api_key": secret})
    assert r.status_code == 201, r.text
    assert r.headers.get("Content-Type", "").startswith("application/json")
    obj = r.json()
    assert PROVIDER_FIELDS <= set(obj), f"missing fields: {PROVIDER_FIELDS - set(obj)}"
    assert obj["name"] == "openai-main"
    assert obj["provider"] == "openai"
    # No base_url given: null, or the provider's default https endpoint.
    assert obj["base_url"] is None or obj["base_url"].startswith("https://"), obj["base_url"]
    assert obj["last4"] == secret[-4:]
    assert isinstance(obj["id"], str) and obj["id"]
    parse_time(obj["created_at"])
    assert "api_key" not in obj
    assert secret not in r.text and secret[:-4] not in r.text


@pytest.mark.parametrize("provider", ["anthropic", "openai-compatible"])
def test_create_provider_key_other_providers(inst, provider):
    body = {"name": f"p-{provider}", "provider": provider, "api_key": new_provider_secret()}
    if provider == "openai-compatible":
        body["base_url"] = "http://127.0.0.1:9"
    r = inst.api("POST", "/api/provider-keys", json=body)
    assert r.status_code == 201, r.text
    obj = r.json()
    assert obj["provider"] == provider
    if provider == "openai-compatible":
        assert obj["base_url"] == body["base_url"]
    else:
        assert obj["base_url"] is None or obj["base_url"].startswith("https://"), obj["base_url"]


def test_openai_compatible_requires_base_url(inst):
    r = inst.api("POST", "/api/provider-keys",
                 json={"name": "compat", "provider": "openai-compatible", "api_key": new_provider_secret()})
    assert_error(r, 422, "validation_error")


def test_unknown_provider_is_422(inst):
    r = inst.api("POST", "/api/provider-keys",
                 json={"name": "x", "provider": "skynet", "api_key": new_provider_secret()})
    assert_error(r, 422, "validation_error")


@pytest.mark.parametrize("missing", ["name", "provider", "api_key"])
def test_provider_key_missing_field(inst, missing):
    body = {"name": "x", "provider": "openai", "api_key": new_provider_secret()}
    del body[missing]
    assert_bad_input(inst.api("POST", "/api/provider-keys", json=body))


@pytest.mark.parametrize("body", [
    {"name": 123, "provider": "openai"},
    {"name": "x", "provider": ["openai"]},
    {"name": "x", "provider": "openai", "base_url": 5},
])
def test_provider_key_wrong_types(inst, body):
    body = dict(body)
    body.setdefault("api_key", new_provider_secret())
    assert_bad_input(inst.api("POST", "/api/provider-keys", json=body))


def test_provider_key_api_key_wrong_type(inst):
    assert_bad_input(inst.api("POST", "/api/provider-keys", json={"name": "x", "provider": "openai", "api_key": 42}))


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[]", b'"string"'])
def test_provider_key_malformed_json(inst, raw):
    r = inst.api("POST", "/api/provider-keys", data=raw, headers={"Content-Type": "application/json"})
    if raw in (b"{not json", b""):
        assert_error(r, 400, "invalid_request")
    else:  # valid JSON of the wrong shape
        assert_bad_input(r)


def test_list_provider_keys(inst):
    a, sa = inst.create_provider_key(name="list-a")
    b, sb = inst.create_provider_key(name="list-b", provider="anthropic")
    r = inst.api("GET", "/api/provider-keys")
    assert r.status_code == 200, r.text
    listed = {o["id"]: o for o in r.json()["data"]}
    assert a["id"] in listed and b["id"] in listed
    for o in listed.values():
        assert PROVIDER_FIELDS <= set(o)
        assert_no_secret_fields(o)
    assert listed[a["id"]]["last4"] == sa[-4:]
    assert sa not in r.text and sb not in r.text


def test_delete_provider_key(inst):
    obj, _ = inst.create_provider_key(name="to-delete")
    r = inst.api("DELETE", f"/api/provider-keys/{obj['id']}")
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert obj["id"] not in ids(inst.api("GET", "/api/provider-keys"))
    assert_error(inst.api("DELETE", f"/api/provider-keys/{obj['id']}"), 404, "not_found")


def test_delete_unknown_provider_key_is_404(inst):
    assert_error(inst.api("DELETE", "/api/provider-keys/doesnotexist0"), 404, "not_found")


def test_deleting_provider_key_revokes_its_proxy_keys(inst):
    obj, _ = inst.create_provider_key(name="with-proxies")
    p1 = inst.create_proxy_key(obj["id"], name="dep-1")
    p2 = inst.create_proxy_key(obj["id"], name="dep-2")
    assert inst.api("DELETE", f"/api/provider-keys/{obj['id']}").status_code == 204
    for p in (p1, p2):
        r = inst.api("GET", f"/api/proxy-keys/{p['id']}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "revoked", r.json()
        assert r.json()["revoked_at"] is not None
    listed = {o["id"]: o for o in inst.api("GET", "/api/proxy-keys").json()["data"]}
    assert listed[p1["id"]]["status"] == "revoked"


# --------------------------------------------------------------------------------------------
# Proxy keys
# --------------------------------------------------------------------------------------------


def test_create_proxy_key_minimal(inst, pk):
    r = inst.api("POST", "/api/proxy-keys", json={"name": "minimal", "provider_key_id": pk["id"]})
    assert r.status_code == 201, r.text
    obj = r.json()
    assert PROXY_KEY_RE.match(obj.get("key", "")), "key missing or not gate_proxy_ + 50 base62"
    assert PROXY_FIELDS <= set(obj), f"missing fields: {PROXY_FIELDS - set(obj)}"
    assert obj["kind"] == "proxy"
    assert obj["name"] == "minimal"
    assert obj["provider_key_id"] == pk["id"]
    assert obj["status"] == "active"
    assert obj["revoked_at"] is None
    assert obj["expires_at"] is None
    # Not given: empty or null (no restriction).
    assert obj["allowed_models"] in ([], None)
    assert obj["allowed_ips"] in ([], None)
    assert obj["rate_limits"] in ([], None)
    assert obj["budget"] is None
    parse_time(obj["created_at"])


def test_create_proxy_key_full(inst, pk):
    body = {
        "name": "full",
        "description": "a key with everything",
        "provider_key_id": pk["id"],
        "expires_at": iso_in(timedelta(days=30)),
        "allowed_models": ["gpt-4o-mini", "gpt-4o"],
        "allowed_ips": ["10.0.0.0/8", "192.168.1.5", "2001:db8::/32"],
        "rate_limits": [
            {"metric": "requests", "limit": 60, "window_seconds": 60},
            {"metric": "tokens", "limit": 100000, "window_seconds": 3600},
            {"metric": "cost_usd", "limit": 1.5, "window_seconds": 86400},
        ],
        "budget": {"limit_usd": 10.25, "period": "month"},
    }
    r = inst.api("POST", "/api/proxy-keys", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    fetched = inst.api("GET", f"/api/proxy-keys/{created['id']}").json()
    for obj in (created, fetched):
        assert obj["description"] == body["description"]
        assert parse_time(obj["expires_at"]) == parse_time(body["expires_at"])
        assert obj["allowed_models"] == body["allowed_models"]
        assert {ipaddress.ip_network(n, strict=False) for n in obj["allowed_ips"]} == {
            ipaddress.ip_network(n, strict=False) for n in body["allowed_ips"]}
        assert [(l["metric"], float(l["limit"]), l["window_seconds"]) for l in obj["rate_limits"]] == [
            (l["metric"], float(l["limit"]), l["window_seconds"]) for l in body["rate_limits"]]
        assert float(obj["budget"]["limit_usd"]) == 10.25 and obj["budget"]["period"] == "month"


def test_proxy_key_unknown_provider_key_is_422(inst):
    r = inst.api("POST", "/api/proxy-keys", json={"name": "x", "provider_key_id": "doesnotexist0"})
    assert_error(r, 422, "validation_error")


@pytest.mark.parametrize("bad", ["not-an-ip", "10.0.0.0/33", "300.1.1.1", "10.0.0.0/8/8", ""])
def test_proxy_key_bad_allowed_ip_is_422(inst, pk, bad):
    r = inst.api("POST", "/api/proxy-keys", json={"name": "x", "provider_key_id": pk["id"], "allowed_ips": [bad]})
    assert_error(r, 422, "validation_error")


def test_proxy_key_expiry_in_the_past_is_422(inst, pk):
    r = inst.api("POST", "/api/proxy-keys",
                 json={"name": "x", "provider_key_id": pk["id"], "expires_at": iso_in(-timedelta(hours=1))})
    assert_error(r, 422, "validation_error")


@pytest.mark.parametrize("extra", [
    {"expires_at": "tomorrow"},
    {"rate_limits": [{"metric": "bananas", "limit": 1, "window_seconds": 60}]},
    {"rate_limits": [{"metric": "requests", "limit": -1, "window_seconds": 60}]},
    {"rate_limits": [{"metric": "requests", "limit": 10, "window_seconds": 0}]},
    {"rate_limits": {"metric": "requests"}},
    {"budget": {"limit_usd": 5, "period": "fortnight"}},
    {"budget": {"limit_usd": -5, "period": "day"}},
    {"allowed_models": "gpt-4o"},
    {"name": 7},
])
def test_proxy_key_invalid_fields(inst, pk, extra):
    body = {"name": "x", "provider_key_id": pk["id"], **extra}
    assert_bad_input(inst.api("POST", "/api/proxy-keys", json=body))


def test_proxy_key_missing_fields(inst, pk):
    assert_bad_input(inst.api("POST", "/api/proxy-keys", json={"name": "x"}))
    assert_bad_input(inst.api("POST", "/api/proxy-keys", json={"provider_key_id": pk["id"]}))
    assert_error(inst.api("POST", "/api/proxy-keys", data=b"{nope", headers={"Content-Type": "application/json"}),
                 400, "invalid_request")


def test_list_and_get_proxy_keys_never_show_the_key(inst, pk):
    created = inst.create_proxy_key(pk["id"], name="listed")
    key = created["key"]
    r = inst.api("GET", "/api/proxy-keys")
    assert r.status_code == 200
    assert created["id"] in ids(r)
    for o in r.json()["data"]:
        assert PROXY_FIELDS <= set(o)
        assert_no_secret_fields(o)
    assert key not in r.text and key[-38:] not in r.text
    g = inst.api("GET", f"/api/proxy-keys/{created['id']}")
    assert g.status_code == 200
    assert_no_secret_fields(g.json())
    assert key not in g.text and key[-38:] not in g.text
    assert contract_view(g.json()) == contract_view(created)


def test_get_unknown_proxy_key_is_404(inst):
    assert_error(inst.api("GET", "/api/proxy-keys/doesnotexist0"), 404, "not_found")


def test_patch_proxy_key(inst, pk):
    created = inst.create_proxy_key(pk["id"], name="before")
    patch = {
        "name": "after",
        "description": "patched",
        "allowed_models": ["claude-3-5-haiku-latest"],
        "rate_limits": [{"metric": "requests", "limit": 5, "window_seconds": 1}],
        "budget": {"limit_usd": 3, "period": "day"},
    }
    r = inst.api("PATCH", f"/api/proxy-keys/{created['id']}", json=patch)
    assert r.status_code == 200, r.text
    for obj in (r.json(), inst.api("GET", f"/api/proxy-keys/{created['id']}").json()):
        assert obj["name"] == "after"
        assert obj["description"] == "patched"
        assert obj["allowed_models"] == ["claude-3-5-haiku-latest"]
        assert [(l["metric"], float(l["limit"]), l["window_seconds"]) for l in obj["rate_limits"]] == [
            ("requests", 5.0, 1)]
        assert float(obj["budget"]["limit_usd"]) == 3 and obj["budget"]["period"] == "day"
        assert obj["provider_key_id"] == pk["id"] and obj["status"] == "active"
        assert_no_secret_fields(obj)
    # A field not in the patch is left alone.
    r = inst.api("PATCH", f"/api/proxy-keys/{created['id']}", json={"description": "again"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "after" and r.json()["description"] == "again"


@pytest.mark.parametrize("patch", [
    {"name": 5},
    {"allowed_models": "gpt-4o"},
    {"allowed_ips": ["nope"]},
    {"rate_limits": [{"metric": "requests", "limit": "many", "window_seconds": 1}]},
    {"budget": {"limit_usd": "ten", "period": "day"}},
    {"expires_at": 12},
])
def test_patch_proxy_key_invalid(inst, pk, patch):
    created = inst.create_proxy_key(pk["id"], name="patch-invalid")
    assert_bad_input(inst.api("PATCH", f"/api/proxy-keys/{created['id']}", json=patch))
    # Nothing changed.
    after = inst.api("GET", f"/api/proxy-keys/{created['id']}").json()
    assert contract_view(after) == contract_view(created)


def test_patch_proxy_key_malformed_json(inst, pk):
    created = inst.create_proxy_key(pk["id"], name="patch-malformed")
    r = inst.api("PATCH", f"/api/proxy-keys/{created['id']}", data=b"{", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_request")


def test_patch_unknown_proxy_key_is_404(inst):
    assert_error(inst.api("PATCH", "/api/proxy-keys/doesnotexist0", json={"name": "x"}), 404, "not_found")


def test_revoke_proxy_key(inst, pk):
    created = inst.create_proxy_key(pk["id"], name="revoke-me")
    r = inst.api("POST", f"/api/proxy-keys/{created['id']}/revoke")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "revoked"
    assert parse_time(r.json()["revoked_at"])
    assert_no_secret_fields(r.json())
    assert inst.api("GET", f"/api/proxy-keys/{created['id']}").json()["status"] == "revoked"
    again = inst.api("POST", f"/api/proxy-keys/{created['id']}/revoke")
    # The contract says 409; an idempotent 200 is tolerated. Report which one was seen.
    print(f"second revoke of a proxy key answered {again.status_code}")
    if again.status_code == 200:
        assert again.json()["status"] == "revoked"
    else:
        assert_error(again, 409, "conflict")
    # A revoked key cannot be patched back to life.
    patched = inst.api("PATCH", f"/api/proxy-keys/{created['id']}", json={"name": "still-revoked"})
    if patched.status_code == 200:
        assert patched.json()["status"] == "revoked"


def test_revoke_unknown_proxy_key_is_404(inst):
    assert_error(inst.api("POST", "/api/proxy-keys/doesnotexist0/revoke"), 404, "not_found")


# --------------------------------------------------------------------------------------------
# Organization API keys
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,pattern", [("api", API_KEY_RE), ("read", READ_KEY_RE)])
def test_create_org_key(inst, kind, pattern):
    r = inst.api("POST", "/api/api-keys", json={"name": f"{kind}-key", "kind": kind})
    assert r.status_code == 201, r.text
    obj = r.json()
    assert pattern.match(obj.get("key", "")), f"key missing or not gate_{kind}_ + 50 base62"
    assert ORG_KEY_FIELDS <= set(obj), f"missing fields: {ORG_KEY_FIELDS - set(obj)}"
    assert obj["kind"] == kind and obj["status"] == "active" and obj["revoked_at"] is None
    parse_time(obj["created_at"])


def test_org_key_kind_proxy_is_422(inst):
    assert_error(inst.api("POST", "/api/api-keys", json={"name": "x", "kind": "proxy"}), 422, "validation_error")


@pytest.mark.parametrize("body", [{"name": "x", "kind": "root"}, {"name": "x"}, {"kind": "api"}, {"name": 1, "kind": "api"}])
def test_org_key_invalid(inst, body):
    assert_bad_input(inst.api("POST", "/api/api-keys", json=body))


def test_list_org_keys(inst):
    created = inst.create_org_key("read", "listed-read")
    r = inst.api("GET", "/api/api-keys")
    assert r.status_code == 200
    listed = {o["id"]: o for o in r.json()["data"]}
    assert created["id"] in listed
    for o in listed.values():
        assert ORG_KEY_FIELDS <= set(o)
        assert_no_secret_fields(o)
        assert o["kind"] in ("api", "read")
    assert created["key"] not in r.text
    assert inst.owner_key not in r.text
    assert any(o["kind"] == "api" for o in listed.values()), "the owner key is not listed"


def test_new_api_key_works_and_revoked_one_gets_401(inst):
    created = inst.create_org_key("api", "short-lived")
    key = created["key"]
    assert inst.api("GET", "/api/proxy-keys", key=key).status_code == 200
    r = inst.api("POST", f"/api/api-keys/{created['id']}/revoke")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "revoked" and r.json()["revoked_at"]
    assert_error(inst.api("GET", "/api/proxy-keys", key=key), 401, "authentication_error")
    listed = {o["id"]: o for o in inst.api("GET", "/api/api-keys").json()["data"]}
    assert listed[created["id"]]["status"] == "revoked"


def test_revoke_unknown_org_key_is_404(inst):
    assert_error(inst.api("POST", "/api/api-keys/doesnotexist0/revoke"), 404, "not_found")


# --------------------------------------------------------------------------------------------
# Authentication and authorisation
# --------------------------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/api/provider-keys"),
    ("POST", "/api/provider-keys"),
    ("GET", "/api/proxy-keys"),
    ("POST", "/api/proxy-keys"),
    ("GET", "/api/api-keys"),
    ("POST", "/api/api-keys"),
]


@pytest.mark.parametrize("method,path", PROTECTED)
def test_no_auth_is_401(inst, method, path):
    assert_error(inst.api(method, path, key=None, json={} if method == "POST" else None), 401, "authentication_error")


def test_bad_credentials_are_401_and_indistinguishable(inst):
    owner = inst.owner_key
    variants = {
        "garbage": "garbage",
        "empty-looking": "gate_api_",
        "wrong kind prefix": "gate_xyz_" + owner[9:],
        "one char changed (bad checksum)": tamper_key(owner, keep_checksum_valid=False),
        "one char changed (valid checksum)": tamper_key(owner, keep_checksum_valid=True),
        "truncated": owner[:-1],
        "extended": owner + "A",
    }
    messages = {}
    for name, bad in variants.items():
        r = inst.api("GET", "/api/provider-keys", key=bad)
        err = assert_error(r, 401, "authentication_error")
        messages[name] = err["message"]
    for name, headers in {"Basic scheme": {"Authorization": "Basic Zm9vOmJhcg=="},
                          "Bearer without token": {"Authorization": "Bearer "}}.items():
        r = inst.api("GET", "/api/provider-keys", key=None, headers=headers)
        messages[name] = assert_error(r, 401, "authentication_error")["message"]
    assert len(set(messages.values())) == 1, f"401 messages differ between failure kinds: {messages}"


def test_proxy_key_on_admin_api_is_403(inst, pk):
    proxy = inst.create_proxy_key(pk["id"], name="not-admin")
    assert_error(inst.api("GET", "/api/proxy-keys", key=proxy["key"]), 403, "permission_denied")
    assert_error(inst.api("GET", "/api/provider-keys", key=proxy["key"]), 403, "permission_denied")


def test_read_key_cannot_manage_keys(inst, pk):
    read = inst.create_org_key("read", "reader")["key"]
    assert_error(inst.api("GET", "/api/proxy-keys", key=read), 403, "permission_denied")
    assert_error(inst.api("POST", "/api/proxy-keys", key=read, json={"name": "x", "provider_key_id": pk["id"]}),
                 403, "permission_denied")
    assert_error(inst.api("GET", "/api/provider-keys", key=read), 403, "permission_denied")
    assert_error(inst.api("POST", "/api/provider-keys", key=read,
                          json={"name": "x", "provider": "openai", "api_key": new_provider_secret()}),
                 403, "permission_denied")
    assert_error(inst.api("GET", "/api/api-keys", key=read), 403, "permission_denied")
    assert_error(inst.api("POST", "/api/api-keys", key=read, json={"name": "x", "kind": "api"}), 403,
                 "permission_denied")
    assert_error(inst.api("DELETE", f"/api/provider-keys/{pk['id']}", key=read), 403, "permission_denied")
    # The provider key survived the attempt.
    assert pk["id"] in ids(inst.api("GET", "/api/provider-keys"))


@pytest.mark.parametrize("path", ["/api/does-not-exist", "/api/provider-keys/x/y/z", "/does-not-exist"])
def test_unknown_route_is_404_json(inst, path):
    assert_error(inst.api("GET", path), 404, "not_found")


def test_every_response_has_request_id(inst):
    seen = set()
    for method, path, key in [("GET", "/api/health", None), ("GET", "/api/openapi.yaml", None),
                              ("GET", "/api/provider-keys", ...), ("GET", "/api/provider-keys", None),
                              ("GET", "/api/nope", ...)]:
        r = inst.api(method, path) if key is ... else inst.api(method, path, key=key)
        rid = r.headers.get(REQUEST_ID_HEADER)
        assert rid, f"{method} {path}: no {REQUEST_ID_HEADER}"
        seen.add(rid)
    assert len(seen) == 5, "request ids should be unique per request"


def test_openapi_document(inst):
    r = inst.api("GET", "/api/openapi.yaml", key=None)
    assert r.status_code == 200
    doc = yaml.safe_load(r.text)
    assert isinstance(doc, dict) and "openapi" in doc, "not an OpenAPI document"
    assert str(doc["openapi"]).startswith("3.")
    paths = doc.get("paths") or {}
    for p in ("/api/provider-keys", "/api/proxy-keys", "/api/api-keys"):
        assert p in paths, f"{p} missing from the OpenAPI paths: {sorted(paths)}"
