"""Access control end to end (DESIGN §3): a real `gatehouse serve` over TLS.

- A second organization from the CLI, and tenancy: its owner key gets 404 on every id of the
  first organization, and its lists never show the first organization's objects.
- IP allowlists through real sockets (the peer is 127.0.0.1): the `/api` lock-out refusal, the
  gateway allowlist, `X-Forwarded-For` ignored from untrusted peers and resolved through trusted
  proxies (right-most untrusted entry), proxy-key `allowed_ips` on the resolved address, IPv6
  entries.
- Session login with the cookie over TLS, the CSRF `Origin` rule, logout, login throttling.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
import uuid

import pytest
import requests

from ghtest import API_KEY_RE, OWNER_RE, REGISTRY, REQUEST_ID_HEADER, assert_error, canary_forms, poll_until

LOG_TIMEOUT = 6.0
OPEN_SETTINGS = {"api_ip_allowlist": [], "gateway_ip_allowlist": [], "trusted_proxies": []}

pytestmark = pytest.mark.usefixtures("upstream_stays_clean")


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _open_settings(request, inst):
    """Every test starts and ends with no allowlists and no trusted proxies."""
    yield
    r = inst.api("PATCH", "/api/settings", json=OPEN_SETTINGS)
    assert r.status_code == 200, f"could not reset the settings after {request.node.name}: {r.status_code} {r.text}"


def patch_settings(inst, headers=None, **changes) -> requests.Response:
    return inst.api("PATCH", "/api/settings", json=changes, headers=headers)


def set_settings(inst, headers=None, **changes) -> dict:
    r = patch_settings(inst, headers=headers, **changes)
    assert r.status_code == 200, f"PATCH /api/settings {changes}: {r.status_code} {r.text}"
    return r.json()


def raw(inst, method: str, path: str, *, session: requests.Session | None = None, **kw) -> requests.Response:
    """A request without the owner key (or any key), through `session` if given."""
    kw.setdefault("timeout", 10.0)
    return (session or requests).request(method, inst.base_url + path, verify=inst.verify, **kw)


def chat(inst, key: str, xff=None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    return requests.post(inst.base_url + "/v1/chat/completions", json=body, headers=headers, verify=inst.verify, timeout=30)


def assert_gateway_403(resp: requests.Response) -> None:
    assert resp.status_code == 403, f"expected 403, got {resp.status_code}: {resp.text[:300]}"
    err = resp.json().get("error")
    assert isinstance(err, dict) and err.get("message"), resp.text[:300]


def wait_rows(inst, proxy_key_id: str, n: int) -> list[dict]:
    deadline = time.monotonic() + LOG_TIMEOUT
    while True:
        r = inst.api("GET", f"/api/requests?proxy_key_id={proxy_key_id}&limit=1000")
        assert r.status_code == 200, r.text
        rows = r.json()["data"]
        if len(rows) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(rows) >= n, f"expected {n} log rows for {proxy_key_id} within {LOG_TIMEOUT}s, got {len(rows)}"
    return sorted(rows, key=lambda row: row["started_at"])


def new_password(label: str = "user password") -> str:
    pw = "pw-" + secrets.token_urlsafe(18)
    REGISTRY.add_canary(pw, "gatehouse", label)
    return pw


def org_ids(inst) -> list[str]:
    r = inst.cli("org", "list", "--json")
    assert r.rc == 0, r.stderr
    return [o["id"] for o in r.json()["data"]]


class OrgA:
    """The first organization's objects: provider key, proxy key, read key, a user, a logged request."""

    def __init__(self, inst, upstream):
        self.pk, _ = inst.create_provider_key(name="a-openai", provider="openai", base_url=upstream.base_url)
        self.proxy = inst.create_proxy_key(self.pk["id"], name="a-proxy")
        self.read = inst.create_org_key("read", name="a-reader")
        self.spare = inst.create_org_key("api", name="a-spare")
        self.email = f"a-user-{uuid.uuid4().hex[:8]}@example.com"
        r = inst.api("POST", "/api/users", json={"email": self.email, "role": "member", "password": new_password()})
        assert r.status_code == 201, r.text
        self.user = r.json()
        assert chat(inst, self.proxy["key"]).status_code == 200
        self.request_id = wait_rows(inst, self.proxy["id"], 1)[0]["id"]

    @property
    def ids(self) -> list[str]:
        return [self.pk["id"], self.proxy["id"], self.read["id"], self.spare["id"], self.user["id"], self.request_id]


@pytest.fixture(scope="module")
def org_a(inst, upstream) -> OrgA:
    return OrgA(inst, upstream)


@pytest.fixture(scope="module")
def second_org(inst) -> str:
    r = inst.cli("org", "create", "--name", "second")
    # `org create` shows its owner key once by design, like `init` (ghtest only knows init/keys create).
    for out in REGISTRY.outputs:
        if out.path.name.endswith("cli-org-create.stdout"):
            out.mode = "owner-line"
    assert r.rc == 0, f"org create failed: {r.stderr}"
    m = OWNER_RE.search(r.stdout)
    assert m, f"no 'Owner API key (shown once): …' line:\n{r.stdout}"
    key = m.group(1)
    # The running server learns about the CLI's change through the change sequence (≤ 1 s).
    took = poll_until(lambda: inst.api("GET", "/api/usage", key=key).status_code == 200, timeout=2.0, interval=0.1)
    assert took is not None, "the running server did not accept the new organization's owner key within 2 s"
    return key


# --------------------------------------------------------------------------------------------
# Organizations and tenancy
# --------------------------------------------------------------------------------------------


def test_org_create_prints_a_new_working_owner_key(inst, org_a, second_org):
    assert API_KEY_RE.match(second_org), "not an API key"
    assert second_org != inst.owner_key
    assert len(org_ids(inst)) == 2
    for path in ("/api/provider-keys", "/api/proxy-keys", "/api/users", "/api/requests", "/api/usage"):
        r = inst.api("GET", path, key=second_org)
        assert r.status_code == 200, (path, r.text)
        for foreign in org_a.ids:
            assert foreign not in r.text, f"GET {path} of the second org shows the first org's {foreign}"
    assert inst.api("GET", "/api/provider-keys", key=second_org).json()["data"] == []
    keys = inst.api("GET", "/api/api-keys", key=second_org).json()["data"]
    assert len(keys) == 1 and keys[0]["kind"] == "api", keys


def test_other_org_gets_404_on_every_id(inst, org_a, second_org):
    a = org_a
    calls = [
        ("GET", f"/api/provider-keys/{a.pk['id']}", None),
        ("DELETE", f"/api/provider-keys/{a.pk['id']}", None),
        ("GET", f"/api/proxy-keys/{a.proxy['id']}", None),
        ("PATCH", f"/api/proxy-keys/{a.proxy['id']}", {"name": "stolen"}),
        ("POST", f"/api/proxy-keys/{a.proxy['id']}/revoke", None),
        ("POST", f"/api/api-keys/{a.read['id']}/revoke", None),
        ("POST", f"/api/api-keys/{a.spare['id']}/revoke", None),
        ("GET", f"/api/requests/{a.request_id}", None),
        ("GET", f"/api/users/{a.user['id']}", None),
        ("PATCH", f"/api/users/{a.user['id']}", {"role": "viewer"}),
        ("DELETE", f"/api/users/{a.user['id']}", None),
    ]
    for method, path, body in calls:
        r = inst.api(method, path, json=body, key=second_org)
        assert_error(r, 404, "not_found")
    # A proxy key of the second org cannot bind the first org's provider key.
    r = inst.api("POST", "/api/proxy-keys", json={"name": "x", "provider_key_id": a.pk["id"]}, key=second_org)
    assert r.status_code in (404, 422), r.text
    # Nothing changed in the first org.
    assert inst.api("GET", f"/api/provider-keys/{a.pk['id']}").status_code == 200
    px = inst.api("GET", f"/api/proxy-keys/{a.proxy['id']}").json()
    assert px["name"] == "a-proxy" and px["status"] == "active", px
    listed = {k["id"]: k for k in inst.api("GET", "/api/api-keys").json()["data"]}
    assert listed[a.read["id"]]["status"] == "active" and listed[a.spare["id"]]["status"] == "active"
    assert inst.api("GET", f"/api/users/{a.user['id']}").json()["role"] == "member"
    assert inst.api("GET", f"/api/requests/{a.request_id}").status_code == 200


# --------------------------------------------------------------------------------------------
# IP allowlists and the client address
# --------------------------------------------------------------------------------------------


def test_api_allowlist_that_locks_the_caller_out_is_refused(inst):
    r = patch_settings(inst, api_ip_allowlist=["10.0.0.0/8"])
    err = assert_error(r, 409, "conflict")
    assert "lock" in err["message"] and "127.0.0.1" in err["message"], err["message"]
    # A spoofed X-Forwarded-For (no trusted proxies) does not get the change through.
    r = patch_settings(inst, headers={"X-Forwarded-For": "10.1.2.3"}, api_ip_allowlist=["10.0.0.0/8"])
    assert_error(r, 409, "conflict")
    assert inst.api("GET", "/api/settings").json()["api_ip_allowlist"] == []
    # An allowlist that contains the caller is fine, and the API keeps working.
    set_settings(inst, api_ip_allowlist=["10.0.0.0/8", "127.0.0.0/8"])
    assert inst.api("GET", "/api/proxy-keys").status_code == 200


def test_lockout_check_uses_the_new_trusted_proxies(inst):
    via = {"X-Forwarded-For": "10.1.2.3"}
    set_settings(inst, headers=via, trusted_proxies=["127.0.0.1/32"], api_ip_allowlist=["10.1.2.0/24"])
    try:
        # Without the header the caller is 127.0.0.1, outside the allowlist.
        assert_error(inst.api("GET", "/api/settings"), 403, "permission_denied")
        assert inst.api("GET", "/api/settings", headers=via).status_code == 200
        assert_error(inst.api("GET", "/api/settings", headers={"X-Forwarded-For": "10.9.9.9"}), 403, "permission_denied")
    finally:
        r = inst.api("PATCH", "/api/settings", json=OPEN_SETTINGS, headers=via)
        assert r.status_code == 200, r.text


def test_gateway_allowlist_refuses_loopback_and_ignores_spoofed_xff(inst, org_a, upstream):
    set_settings(inst, gateway_ip_allowlist=["10.0.0.0/8"])
    n0 = upstream.count()
    assert_gateway_403(chat(inst, org_a.proxy["key"]))
    assert_gateway_403(chat(inst, org_a.proxy["key"], xff="10.1.2.3"))
    assert_gateway_403(chat(inst, org_a.proxy["key"], xff="127.0.0.1, 10.1.2.3"))
    assert upstream.count() == n0, "a refused request reached the provider"
    # The admin API is not affected by the gateway allowlist.
    assert inst.api("GET", "/api/proxy-keys").status_code == 200
    set_settings(inst, gateway_ip_allowlist=[])
    assert chat(inst, org_a.proxy["key"]).status_code == 200


def test_spoofed_xff_from_an_untrusted_peer_is_logged_as_the_peer(inst, org_a):
    px = inst.create_proxy_key(org_a.pk["id"], name=f"spoof-{uuid.uuid4().hex[:6]}")
    r = chat(inst, px["key"], xff="10.1.2.3")
    assert r.status_code == 200, r.text
    rows = wait_rows(inst, px["id"], 1)
    assert rows[0]["client_ip"] == "127.0.0.1", rows[0]


def test_trusted_proxy_right_most_untrusted_entry_is_the_client(inst, org_a, upstream):
    set_settings(inst, trusted_proxies=["127.0.0.1/32"], gateway_ip_allowlist=["10.1.2.0/24"])
    px = inst.create_proxy_key(org_a.pk["id"], name=f"xff-{uuid.uuid4().hex[:6]}")
    r = chat(inst, px["key"], xff="10.9.9.9, 10.1.2.3")
    assert r.status_code == 200, r.text
    rows = wait_rows(inst, px["id"], 1)
    assert rows[0]["client_ip"] == "10.1.2.3", rows[0]
    n0 = upstream.count()
    assert_gateway_403(chat(inst, px["key"], xff="10.1.2.3, 10.9.9.9"))  # the right-most one counts
    assert_gateway_403(chat(inst, px["key"]))  # no header: the proxy itself, 127.0.0.1
    assert_gateway_403(chat(inst, px["key"], xff="not-an-ip"))
    assert upstream.count() == n0


def test_chain_with_several_trusted_hops(inst, org_a, upstream):
    set_settings(inst, trusted_proxies=["127.0.0.1/32", "10.200.0.0/16"], gateway_ip_allowlist=["10.1.2.0/24"])
    px = inst.create_proxy_key(org_a.pk["id"], name=f"hops-{uuid.uuid4().hex[:6]}")
    r = chat(inst, px["key"], xff="10.9.9.9, 10.1.2.3, 10.200.0.7, 10.200.3.4")
    assert r.status_code == 200, r.text
    assert wait_rows(inst, px["id"], 1)[0]["client_ip"] == "10.1.2.3"
    # Every hop trusted: the left-most is the client (10.200.0.5, outside the allowlist).
    assert_gateway_403(chat(inst, px["key"], xff="10.200.0.5, 10.200.0.7"))
    # An untrusted hop right of the client: that hop is the client.
    assert_gateway_403(chat(inst, px["key"], xff="10.1.2.3, 10.9.9.9, 10.200.0.7"))


def test_proxy_key_allowed_ips_use_the_resolved_address(inst, org_a):
    px = inst.create_proxy_key(org_a.pk["id"], name=f"ips-{uuid.uuid4().hex[:6]}", allowed_ips=["10.1.2.0/24"])
    assert_gateway_403(chat(inst, px["key"]))
    assert_gateway_403(chat(inst, px["key"], xff="10.1.2.3"))  # not believed: no trusted proxies
    set_settings(inst, trusted_proxies=["127.0.0.1/32"])
    r = chat(inst, px["key"], xff="10.1.2.3")
    assert r.status_code == 200, r.text
    assert_gateway_403(chat(inst, px["key"], xff="10.1.3.3"))


def test_ipv6_entries_are_accepted_in_settings(inst, org_a):
    wanted = {
        "api_ip_allowlist": ["127.0.0.0/8", "::1/128", "2001:db8::/48"],
        "gateway_ip_allowlist": ["2001:db8::/32", "::1", "127.0.0.0/8", "fe80::/10"],
        "trusted_proxies": ["::1/128", "fd00::/8"],
    }
    got = set_settings(inst, **wanted)
    again = inst.api("GET", "/api/settings").json()
    for field, entries in wanted.items():
        for shown in (got, again):
            assert {ipaddress.ip_network(e, strict=False) for e in shown[field]} == \
                {ipaddress.ip_network(e, strict=False) for e in entries}, (field, shown[field])
    assert chat(inst, org_a.proxy["key"]).status_code == 200  # 127.0.0.1 is in the gateway list
    # An IPv6-only gateway allowlist refuses the IPv4 loopback peer.
    set_settings(inst, gateway_ip_allowlist=["2001:db8::/32", "::1/128"])
    assert_gateway_403(chat(inst, org_a.proxy["key"]))
    for bad in (["2001:db8::/129"], ["::g"], ["10.0.0.0/33"]):
        r = patch_settings(inst, gateway_ip_allowlist=bad)
        assert r.status_code in (400, 422), (bad, r.status_code, r.text)


# --------------------------------------------------------------------------------------------
# Sessions over TLS
# --------------------------------------------------------------------------------------------


def cli_user(inst, role: str) -> tuple[str, str]:
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    password = new_password()
    org = org_ids(inst)[0]
    r = inst.cli("users", "create", "--email", email, "--role", role, "--password-stdin", "--org", org, input=password + "\n")
    assert r.rc == 0, f"users create: {r.stderr}"
    assert password not in r.stdout and password not in r.stderr
    return email, password


def test_session_login_cookie_origin_and_logout(inst):
    email, password = cli_user(inst, "admin")
    origin = {"Origin": inst.base_url}
    with requests.Session() as s:
        r = raw(inst, "POST", "/api/sessions", session=s, json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        assert r.headers.get(REQUEST_ID_HEADER)
        set_cookie = r.headers.get("Set-Cookie", "")
        attrs = {p.strip().split("=")[0].lower(): p.strip() for p in set_cookie.split(";")}
        assert "gatehouse_session" in attrs, set_cookie
        assert "secure" in attrs and "httponly" in attrs, set_cookie
        assert attrs.get("samesite", "").lower() == "samesite=strict", set_cookie
        assert attrs.get("path") == "Path=/", set_cookie
        token = s.cookies.get("gatehouse_session")
        assert token, "the cookie jar holds no session cookie"
        REGISTRY.add_canary(token, "gatehouse", "session token")
        assert token not in r.text
        for form in (password, ):
            assert form not in r.text

        assert raw(inst, "GET", "/api/usage", session=s).status_code == 200
        assert raw(inst, "GET", "/api/settings", session=s).status_code == 200
        # Cookie writes need our Origin.
        for bad in ({}, {"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Origin": inst.base_url.replace("https://", "http://evil.")}):
            r = raw(inst, "POST", "/api/api-keys", session=s, json={"name": "csrf", "kind": "api"}, headers=bad)
            assert_error(r, 403, "permission_denied")
        r = raw(inst, "POST", "/api/api-keys", session=s, json={"name": "via-session", "kind": "read"}, headers=origin)
        assert r.status_code == 201, r.text
        REGISTRY.add_gatehouse_key(r.json()["key"], "read key created with a session")
        r = raw(inst, "PATCH", "/api/settings", session=s, json={"retention_days": 45}, headers=origin)
        assert r.status_code == 200, r.text
        # An admin session cannot grant owner.
        r = raw(inst, "POST", "/api/users", session=s, headers=origin,
                json={"email": f"o-{uuid.uuid4().hex[:6]}@example.com", "role": "owner", "password": new_password()})
        assert_error(r, 403, "permission_denied")

        assert_error(raw(inst, "DELETE", "/api/sessions", session=s), 403, "permission_denied")
        r = raw(inst, "DELETE", "/api/sessions", session=s, headers=origin)
        assert r.status_code == 204, r.text
    # The old cookie no longer works.
    r = raw(inst, "GET", "/api/usage", headers={"Cookie": f"gatehouse_session={token}"})
    assert_error(r, 401, "authentication_error")
    assert inst.api("PATCH", "/api/settings", json={"retention_days": 90}).status_code == 200


def test_viewer_session_sees_usage_only(inst):
    email, password = cli_user(inst, "viewer")
    with requests.Session() as s:
        r = raw(inst, "POST", "/api/sessions", session=s, json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        REGISTRY.add_canary(s.cookies.get("gatehouse_session") or "", "gatehouse", "session token")
        assert raw(inst, "GET", "/api/usage", session=s).status_code == 200
        for path in ("/api/requests", "/api/proxy-keys", "/api/users", "/api/settings"):
            assert_error(raw(inst, "GET", path, session=s), 403, "permission_denied")


def test_login_from_outside_the_api_allowlist_is_refused(inst):
    email, password = cli_user(inst, "member")
    via = {"X-Forwarded-For": "10.1.2.3"}
    set_settings(inst, headers=via, trusted_proxies=["127.0.0.1/32"], api_ip_allowlist=["10.1.2.0/24"])
    try:
        with requests.Session() as s:
            r = raw(inst, "POST", "/api/sessions", session=s, json={"email": email, "password": password})
            assert r.status_code in (401, 403), r.text
            assert not s.cookies.get("gatehouse_session"), "a session cookie for a caller outside the allowlist"
            wrong = raw(inst, "POST", "/api/sessions", session=s, json={"email": email, "password": password + "-nope"})
            assert (wrong.status_code, wrong.json()["error"]["type"]) == (r.status_code, r.json()["error"]["type"]), (
                f"outside the allowlist the right password gets {r.status_code} and a wrong one {wrong.status_code}: "
                "the answer confirms the password")
        with requests.Session() as s:
            r = raw(inst, "POST", "/api/sessions", session=s, json={"email": email, "password": password}, headers=via)
            assert r.status_code == 201, r.text
            REGISTRY.add_canary(s.cookies.get("gatehouse_session") or "", "gatehouse", "session token")
            assert raw(inst, "GET", "/api/requests", session=s, headers=via).status_code == 200
            # The same cookie from outside the allowlist.
            assert_error(raw(inst, "GET", "/api/requests", session=s), 403, "permission_denied")
    finally:
        r = inst.api("PATCH", "/api/settings", json=OPEN_SETTINGS, headers=via)
        assert r.status_code == 200, r.text


def test_login_throttle_per_account_and_per_address(gatehouse):
    g = gatehouse()
    email, password = cli_user(g, "member")
    other_email, other_password = cli_user(g, "viewer")
    for _ in range(5):
        r = raw(g, "POST", "/api/sessions", json={"email": email, "password": "wrong-" + secrets.token_hex(8)})
        assert_error(r, 401, "authentication_error")
    r = raw(g, "POST", "/api/sessions", json={"email": email, "password": password})
    assert_error(r, 429, "rate_limited")
    retry = r.headers.get("Retry-After")
    assert retry and retry.isdigit() and 1 <= int(retry) <= 900, retry
    assert "Set-Cookie" not in r.headers
    # Another account from the same address still can (5 failures so far from 127.0.0.1).
    r = raw(g, "POST", "/api/sessions", json={"email": other_email, "password": other_password})
    assert r.status_code == 201, r.text
    REGISTRY.add_canary(r.cookies.get("gatehouse_session") or "", "gatehouse", "session token")
    # 15 more failures from this address, each with a different account and a spoofed
    # X-Forwarded-For (not believed: no trusted proxies) → the address is throttled.
    for i in range(15):
        r = raw(g, "POST", "/api/sessions", json={"email": f"spray{i}@example.com", "password": "wrong-password-x"},
                headers={"X-Forwarded-For": f"10.0.0.{i + 1}"})
        assert_error(r, 401, "authentication_error")
    r = raw(g, "POST", "/api/sessions", json={"email": other_email, "password": other_password},
            headers={"X-Forwarded-For": "10.9.9.9"})
    assert_error(r, 429, "rate_limited")
    assert r.headers.get("Retry-After", "").isdigit()


def test_no_password_in_logs_or_data(inst):
    """The server's own output never holds a password (the canary scan covers the data dir)."""
    inst.refresh()
    text = (inst.last_stdout_path.read_bytes() if inst.last_stdout_path else b"") + \
        (inst.last_stderr_path.read_bytes() if inst.last_stderr_path else b"")
    for c in REGISTRY.canaries.values():
        if c.label == "user password":
            for name, form in canary_forms(c.value):
                assert form not in text, f"server output holds a user password ({name})"
