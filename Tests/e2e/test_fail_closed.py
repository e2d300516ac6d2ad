"""Fail closed: with existing data, a missing, wrong or malformed master key stops the server
with exit code 2 and one stderr line, before any port is opened."""

from __future__ import annotations

import pytest

from ghtest import assert_one_error_line, new_master_key_b64


def assert_refused(res, what: str):
    assert res.rc is not None, f"{what}: serve did not exit within a few seconds (killed)\n{res.stderr}"
    assert res.rc == 2, f"{what}: expected exit code 2, got {res.rc}\nstderr:\n{res.stderr}"
    line = assert_one_error_line(res.stderr)
    assert "master key" in line.lower(), f"{what}: stderr should mention the master key: {line!r}"
    assert "Gatehouse listening" not in res.stdout, f"{what}: printed 'Gatehouse listening'"
    assert "Owner API key" not in res.stdout, f"{what}: re-initialised an existing data dir"
    assert not res.port_opened, f"{what}: port {res.port} was accepting connections"


@pytest.fixture(scope="module")
def inst(module_gatehouse):
    g = module_gatehouse()
    pk, _ = g.create_provider_key(name="before-failures")
    g.create_proxy_key(pk["id"])
    g.stop()
    g.original_key_text = g.master_key_file.read_text()
    g.pk_id = pk["id"]
    yield g


@pytest.fixture
def restore_key(inst):
    yield
    inst.write_master_key_file(inst.original_key_text)


def test_wrong_master_key_exits_2(inst, restore_key):
    inst.write_master_key_file(new_master_key_b64("another master key"))
    assert_refused(inst.serve_expect_exit(), "different master key")


def test_wrong_master_key_in_versioned_form_exits_2(inst, restore_key):
    inst.write_master_key_file("1:" + new_master_key_b64("another master key (versioned)"))
    assert_refused(inst.serve_expect_exit(), "different master key (1:<base64>)")


def test_missing_master_key_exits_2(inst, restore_key):
    inst.master_key_file.unlink()
    res = inst.serve_expect_exit(master_key=None)
    assert_refused(res, "missing master key file")
    assert not inst.master_key_file.exists(), "a new master key file was generated for existing data"


def test_malformed_master_key_exits_2(inst, restore_key):
    inst.master_key_file.write_text("not base64!!\n")
    assert_refused(inst.serve_expect_exit(), "malformed master key file")


def test_short_master_key_exits_2(inst, restore_key):
    import base64
    import os

    inst.master_key_file.write_text(base64.b64encode(os.urandom(16)).decode() + "\n")
    assert_refused(inst.serve_expect_exit(), "16-byte master key")


def test_env_master_key_overrides_file(inst, restore_key):
    # The right key in the environment wins over a malformed file ...
    right = "\n".join(
        l.strip() for l in inst.original_key_text.splitlines() if l.strip() and not l.strip().startswith("#")
    )
    inst.master_key_file.write_text("not base64!!\n")
    inst.start(master_key=right)
    try:
        r = inst.api("GET", "/api/provider-keys")
        assert r.status_code == 200
        assert inst.pk_id in [p["id"] for p in r.json()["data"]]
    finally:
        inst.stop()
    # ... and a wrong key in the environment wins over the right file.
    inst.write_master_key_file(inst.original_key_text)
    assert_refused(inst.serve_expect_exit(master_key=new_master_key_b64("wrong env key")), "wrong GATEHOUSE_MASTER_KEY")


def test_original_key_still_opens_the_data(inst):
    inst.write_master_key_file(inst.original_key_text)
    inst.start()
    try:
        assert "Owner API key" not in inst.last_stdout
        r = inst.api("GET", "/api/provider-keys")
        assert r.status_code == 200, r.text
        assert inst.pk_id in [p["id"] for p in r.json()["data"]]
    finally:
        inst.stop()


def test_env_master_key_for_fresh_data_dir(gatehouse):
    key = new_master_key_b64("GATEHOUSE_MASTER_KEY for a fresh dir")
    g = gatehouse(start=False, env_master_key=key)
    g.start()
    assert g.owner_key, "fresh data dir should print the owner key"
    assert not g.master_key_file.exists(), "a master key file was created although GATEHOUSE_MASTER_KEY was set"
    pk, _ = g.create_provider_key(name="env-keyed")
    g.restart()
    r = g.api("GET", "/api/provider-keys")
    assert pk["id"] in [p["id"] for p in r.json()["data"]]
    g.stop()
    assert not g.master_key_file.exists()

    # Without the env key (and no file) it refuses; with another env key it refuses.
    assert_refused(g.serve_expect_exit(master_key=None), "env key removed")
    assert not g.master_key_file.exists(), "a new master key file was generated for existing data"
    assert_refused(g.serve_expect_exit(master_key=new_master_key_b64("other env key")), "other env key")
    assert_refused(g.serve_expect_exit(master_key="not base64!!"), "malformed env key")

    # The versioned form of the same key is the same keyring.
    g.start(master_key="1:" + key)
    assert g.api("GET", "/api/provider-keys").status_code == 200
