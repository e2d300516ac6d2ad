"""A running server follows changes made by the CLI on the same data dir within 1 s."""

from __future__ import annotations

from ghtest import new_provider_secret, poll_until

LIMIT = 1.0  # seconds
POLL_FOR = 5.0  # keep polling past the limit, to report how late it was


def status(inst, key) -> int:
    return inst.api("GET", "/api/proxy-keys", key=key).status_code


def assert_within_limit(elapsed, what):
    assert elapsed is not None, f"{what}: not seen within {POLL_FOR}s"
    assert elapsed <= LIMIT, f"{what}: took {elapsed:.3f}s (limit {LIMIT}s)"


def test_cli_created_key_works_within_1s(inst):
    res = inst.cli("keys", "create", "--kind", "api", "--name", "from-cli", "--json")
    assert res.rc == 0, res.stderr
    key = res.json()["key"]
    elapsed = poll_until(lambda: status(inst, key) == 200, POLL_FOR)
    assert_within_limit(elapsed, "CLI-created API key accepted by the server")


def test_cli_revoke_is_followed_within_1s(inst):
    created = inst.create_org_key("api", "to-revoke-from-cli")
    key = created["key"]
    for _ in range(3):  # warm any cache the server has
        assert status(inst, key) == 200
    res = inst.cli("keys", "revoke", created["id"])
    assert res.rc == 0, res.stderr
    elapsed = poll_until(lambda: status(inst, key) == 401, POLL_FOR)
    assert_within_limit(elapsed, "API key revoked by the CLI refused by the server")
    # And it stays refused.
    assert status(inst, key) == 401


def test_cli_created_then_revoked_key(inst):
    res = inst.cli("keys", "create", "--kind", "api", "--name", "cli-both", "--json")
    obj = res.json()
    assert poll_until(lambda: status(inst, obj["key"]) == 200, POLL_FOR) is not None
    assert inst.cli("keys", "revoke", obj["id"]).rc == 0
    assert_within_limit(poll_until(lambda: status(inst, obj["key"]) == 401, POLL_FOR), "CLI revoke of a CLI key")


def test_cli_vault_changes_show_in_api_within_1s(inst):
    res = inst.cli("vault", "add", "--name", "cli-live", "--provider", "openai", "--api-key-stdin", "--json",
                   input=new_provider_secret("provider key (CLI, live server)"))
    assert res.rc == 0, res.stderr
    pk_id = res.json()["id"]

    def listed():
        return pk_id in [o["id"] for o in inst.api("GET", "/api/provider-keys").json()["data"]]

    assert_within_limit(poll_until(listed, POLL_FOR), "provider key added by the CLI listed by the API")

    proxy = inst.create_proxy_key(pk_id, name="live-proxy")
    assert inst.cli("keys", "revoke", proxy["id"]).rc == 0

    def revoked():
        return inst.api("GET", f"/api/proxy-keys/{proxy['id']}").json()["status"] == "revoked"

    assert_within_limit(poll_until(revoked, POLL_FOR), "proxy key revoked by the CLI shown revoked by the API")

    assert inst.cli("vault", "delete", pk_id).rc == 0
    assert_within_limit(poll_until(lambda: not listed(), POLL_FOR), "provider key deleted by the CLI gone from the API")
