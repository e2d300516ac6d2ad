"""The command line: vault and keys commands, exit codes, master key rotation."""

from __future__ import annotations

import os
import stat
from datetime import timedelta

import pytest

from ghtest import (
    API_KEY_RE,
    PROXY_KEY_RE,
    READ_KEY_RE,
    assert_one_error_line,
    iso_in,
    new_master_key_b64,
    new_provider_secret,
    parse_time,
)


@pytest.fixture(scope="module")
def inst(module_gatehouse):
    g = module_gatehouse(start=False)
    res = g.cli("init")
    assert res.rc == 0, f"gatehouse init failed: rc={res.rc}\n{res.stderr}"
    for line in res.stdout.splitlines():
        if line.startswith("Owner API key (shown once): "):
            g.owner_key = line.split(": ", 1)[1].strip()
    assert g.owner_key and API_KEY_RE.match(g.owner_key), res.stdout
    return g


@pytest.fixture(scope="module")
def pk(inst):
    secret = new_provider_secret("provider key (CLI, stdin)")
    res = inst.cli("vault", "add", "--name", "cli-openai", "--provider", "openai", "--api-key-stdin", "--json",
                   input=secret + "\n")
    assert res.rc == 0, res.stderr
    assert secret not in res.stdout + res.stderr, "vault add echoed the secret"
    obj = res.json()
    obj["_secret"] = secret
    return obj


def vault_list(inst) -> dict:
    res = inst.cli("vault", "list", "--json")
    assert res.rc == 0, res.stderr
    body = res.json()
    assert isinstance(body.get("data"), list), body
    return {o["id"]: o for o in body["data"]}


def keys_list(inst, *extra) -> dict:
    res = inst.cli("keys", "list", *extra, "--json")
    assert res.rc == 0, res.stderr
    body = res.json()
    assert isinstance(body.get("data"), list), body
    for o in body["data"]:
        assert "key" not in o, "keys list shows key text"
    return {o["id"]: o for o in body["data"]}


def test_vault_add_from_stdin(inst, pk):
    secret = pk["_secret"]
    assert pk["name"] == "cli-openai" and pk["provider"] == "openai"
    assert isinstance(pk["id"], str) and pk["id"]
    assert pk["last4"] == secret[-4:]
    parse_time(pk["created_at"])
    assert "api_key" not in pk


def test_vault_add_with_flag_and_base_url(inst):
    secret = new_provider_secret("provider key (CLI flag)")
    res = inst.cli("vault", "add", "--name", "compat", "--provider", "openai-compatible",
                   "--base-url", "http://127.0.0.1:9", "--api-key", secret, "--json")
    assert res.rc == 0, res.stderr
    obj = res.json()
    assert obj["provider"] == "openai-compatible" and obj["base_url"] == "http://127.0.0.1:9"
    assert obj["last4"] == secret[-4:]
    assert secret not in res.stdout + res.stderr


def test_vault_add_human_output_hides_secret(inst):
    secret = new_provider_secret("provider key (CLI, human output)")
    res = inst.cli("vault", "add", "--name", "human", "--provider", "anthropic", "--api-key-stdin", input=secret)
    assert res.rc == 0, res.stderr
    assert secret not in res.stdout + res.stderr


def test_vault_add_openai_compatible_without_base_url_fails(inst):
    res = inst.cli("vault", "add", "--name", "x", "--provider", "openai-compatible", "--api-key-stdin",
                   input=new_provider_secret())
    assert res.rc in (1, 2), f"rc={res.rc}"
    assert res.stderr.startswith(("gatehouse: ", "Error: ")), res.stderr


def test_vault_add_unknown_provider_fails(inst):
    res = inst.cli("vault", "add", "--name", "x", "--provider", "skynet", "--api-key-stdin",
                   input=new_provider_secret())
    assert res.rc in (1, 2), f"rc={res.rc}"
    assert res.stderr.startswith(("gatehouse: ", "Error: ")), res.stderr


def test_vault_list(inst, pk):
    listed = vault_list(inst)
    assert pk["id"] in listed
    assert listed[pk["id"]]["last4"] == pk["last4"]
    human = inst.cli("vault", "list")
    assert human.rc == 0, human.stderr
    assert pk["id"] in human.stdout
    assert pk["_secret"] not in human.stdout


def test_keys_create_proxy(inst, pk):
    res = inst.cli("keys", "create", "--kind", "proxy", "--name", "x", "--provider-key", pk["id"], "--json")
    assert res.rc == 0, res.stderr
    obj = res.json()
    assert PROXY_KEY_RE.match(obj.get("key", "")), "no gate_proxy_ key in the JSON"
    assert obj["kind"] == "proxy" and obj["name"] == "x" and obj["provider_key_id"] == pk["id"]
    assert obj["status"] == "active"


def test_keys_create_proxy_with_options(inst, pk):
    expires = iso_in(timedelta(days=7))
    res = inst.cli("keys", "create", "--kind", "proxy", "--name", "opts", "--provider-key", pk["id"],
                   "--description", "with options", "--expires-at", expires,
                   "--allowed-model", "gpt-4o-mini", "--allowed-model", "gpt-4o",
                   "--allowed-ip", "10.1.0.0/16", "--allowed-ip", "127.0.0.1/32", "--json")
    assert res.rc == 0, res.stderr
    obj = res.json()
    assert obj["description"] == "with options"
    assert parse_time(obj["expires_at"]) == parse_time(expires)
    assert obj["allowed_models"] == ["gpt-4o-mini", "gpt-4o"]
    assert obj["allowed_ips"] == ["10.1.0.0/16", "127.0.0.1/32"]


@pytest.mark.parametrize("kind,pattern", [("api", API_KEY_RE), ("read", READ_KEY_RE)])
def test_keys_create_org_keys(inst, kind, pattern):
    res = inst.cli("keys", "create", "--kind", kind, "--name", f"cli-{kind}", "--json")
    assert res.rc == 0, res.stderr
    obj = res.json()
    assert pattern.match(obj.get("key", "")), f"no gate_{kind}_ key in the JSON"
    assert obj["kind"] == kind and obj["status"] == "active"


def test_keys_create_proxy_needs_provider_key(inst):
    res = inst.cli("keys", "create", "--kind", "proxy", "--name", "x", "--json")
    assert res.rc in (1, 2), f"rc={res.rc}"
    assert res.stderr.startswith(("gatehouse: ", "Error: ")), res.stderr
    res = inst.cli("keys", "create", "--kind", "proxy", "--name", "x", "--provider-key", "doesnotexist0")
    assert res.rc == 2, f"rc={res.rc}"
    assert_one_error_line(res.stderr)


def test_keys_create_bad_allowed_ip(inst, pk):
    res = inst.cli("keys", "create", "--kind", "proxy", "--name", "x", "--provider-key", pk["id"],
                   "--allowed-ip", "not-an-ip")
    assert res.rc in (1, 2), f"rc={res.rc}"
    assert "gate_proxy_" not in res.stdout


def test_keys_list(inst, pk):
    res = inst.cli("keys", "create", "--kind", "proxy", "--name", "to-list", "--provider-key", pk["id"], "--json")
    proxy = res.json()
    api = inst.cli("keys", "create", "--kind", "api", "--name", "api-to-list", "--json").json()
    everything = keys_list(inst)
    assert proxy["id"] in everything and api["id"] in everything
    proxies = keys_list(inst, "--kind", "proxy")
    assert proxy["id"] in proxies and api["id"] not in proxies
    assert all(o["kind"] == "proxy" for o in proxies.values())
    human = inst.cli("keys", "list")
    assert human.rc == 0
    assert proxy["key"] not in human.stdout and api["key"] not in human.stdout


def test_keys_revoke(inst, pk):
    proxy = inst.cli("keys", "create", "--kind", "proxy", "--name", "revoke", "--provider-key", pk["id"],
                     "--json").json()
    res = inst.cli("keys", "revoke", proxy["id"])
    assert res.rc == 0, res.stderr
    assert keys_list(inst)[proxy["id"]]["status"] == "revoked"
    res = inst.cli("keys", "revoke", "doesnotexist0")
    assert res.rc == 2
    assert_one_error_line(res.stderr)


def test_vault_delete(inst):
    obj = inst.cli("vault", "add", "--name", "del", "--provider", "openai", "--api-key-stdin", "--json",
                   input=new_provider_secret()).json()
    proxy = inst.cli("keys", "create", "--kind", "proxy", "--name", "dep", "--provider-key", obj["id"],
                     "--json").json()
    res = inst.cli("vault", "delete", obj["id"])
    assert res.rc == 0, res.stderr
    assert obj["id"] not in vault_list(inst)
    assert keys_list(inst)[proxy["id"]]["status"] == "revoked", "deleting a provider key must revoke its proxy keys"
    res = inst.cli("vault", "delete", obj["id"])
    assert res.rc == 2, f"rc={res.rc}"
    assert_one_error_line(res.stderr)


def test_vault_delete_unknown_id(inst):
    res = inst.cli("vault", "delete", "doesnotexist0")
    assert res.rc == 2, f"rc={res.rc}"
    assert_one_error_line(res.stderr)


@pytest.mark.parametrize("args", [
    ("vault", "list", "--bogus"),
    ("keys", "list", "--frobnicate", "1"),
    ("vault", "frob"),
])
def test_unknown_flag_or_command_is_usage_error(inst, args):
    res = inst.cli(*args)
    assert res.rc == 1, f"{args}: rc={res.rc}"
    assert res.stderr.startswith("Error: "), res.stderr


@pytest.mark.parametrize("args", [
    ("vault", "add", "--provider", "openai", "--api-key-stdin"),  # no --name
    ("vault", "add", "--name", "x", "--api-key-stdin"),  # no --provider
    ("keys", "create", "--name", "x"),  # no --kind
    ("keys", "create", "--kind", "api"),  # no --name
    ("keys", "revoke",),  # no id
    ("vault", "delete",),  # no id
])
def test_missing_required_option_is_usage_error(inst, args):
    res = inst.cli(*args, input=new_provider_secret())
    assert res.rc == 1, f"{args}: rc={res.rc}\n{res.stderr}"
    assert res.stderr.startswith("Error: "), res.stderr


def test_help(inst):
    res = inst.cli("--help", common=False)
    assert res.rc == 0
    for word in ("serve", "vault", "keys"):
        assert word in res.stdout


# --------------------------------------------------------------------------------------------
# Wrong master key, rotation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("vault", "list"),
    ("vault", "add", "--name", "x", "--provider", "openai", "--api-key-stdin"),
    ("keys", "list"),
    ("keys", "create", "--kind", "api", "--name", "x"),
])
def test_cli_with_wrong_master_key_exits_2(inst, args):
    original = inst.master_key_file.read_text()
    try:
        inst.write_master_key_file(new_master_key_b64("wrong key for CLI"))
        res = inst.cli(*args, input=new_provider_secret())
        assert res.rc == 2, f"{args} with a wrong master key: rc={res.rc}\n{res.stderr}"
        assert_one_error_line(res.stderr)
        assert "gate_" not in res.stdout
    finally:
        inst.write_master_key_file(original)


def test_cli_with_missing_master_key_exits_2(inst):
    original = inst.master_key_file.read_text()
    try:
        inst.master_key_file.unlink()
        res = inst.cli("vault", "list", master_key=None)
        assert res.rc == 2, f"rc={res.rc}\n{res.stderr}"
        assert_one_error_line(res.stderr)
        assert not inst.master_key_file.exists(), "a new master key file was generated for existing data"
    finally:
        inst.write_master_key_file(original)


def test_rotate_master(inst, pk):
    before = inst.master_key_file.read_text()
    res = inst.cli("vault", "rotate-master")
    assert res.rc == 0, res.stderr
    after = inst.master_key_file.read_text()
    assert after != before, "rotate-master did not change the master key file"
    assert stat.S_IMODE(os.stat(inst.master_key_file).st_mode) == 0o600
    inst.register_master_key_file()

    # The server starts with the new keyring and the vault is intact.
    inst.start()
    try:
        assert "Owner API key" not in inst.last_stdout
        r = inst.api("GET", "/api/provider-keys")
        assert r.status_code == 200, r.text
        assert pk["id"] in [o["id"] for o in r.json()["data"]]
        # New secrets can still be sealed.
        new_pk, _ = inst.create_provider_key(name="after-rotation")
    finally:
        inst.stop()
    assert pk["id"] in vault_list(inst)
    inst.start()
    inst.stop()

    # The old keyring alone no longer opens the data: everything was re-wrapped.
    inst.write_master_key_file(before)
    try:
        res = inst.serve_expect_exit()
        assert res.rc == 2, f"the pre-rotation keyring still opens the data (rc={res.rc})"
    finally:
        inst.write_master_key_file(after)
    inst.start()
    inst.stop()
