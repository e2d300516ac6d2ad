"""First start: initialisation, owner key, TLS certificate, master key file, health."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
import stat

import pytest
import requests

from ghtest import API_KEY_RE, REQUEST_ID_HEADER, assert_one_error_line, keyring_entries


@pytest.fixture(scope="module")
def inst(module_gatehouse):
    g = module_gatehouse()
    g.settle()
    return g


def first_pem_der(path) -> bytes:
    text = open(path).read()
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    assert m, f"{path} holds no PEM certificate"
    return ssl.PEM_cert_to_DER_cert(m.group(0))


def fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def presented_cert_der(port: int) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return s.getpeercert(binary_form=True)


def test_first_start_prints_owner_key(inst):
    assert inst.owner_key, f"no 'Owner API key (shown once): ...' line on first start:\n{inst.last_stdout}"
    assert API_KEY_RE.match(inst.owner_key), "owner key does not have the gate_api_ format"
    assert inst.last_stdout.count("Owner API key (shown once)") == 1
    r = inst.api("GET", "/api/provider-keys")
    assert r.status_code == 200, r.text


def test_health_needs_no_auth(inst):
    r = inst.api("GET", "/api/health", key=None)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok"}
    assert r.headers.get(REQUEST_ID_HEADER)


def test_data_dir_holds_the_database(inst):
    assert (inst.data_dir / "gatehouse.sqlite").is_file(), sorted(p.name for p in inst.data_dir.iterdir())


def test_master_key_file_created_0600_outside_data_dir(inst):
    f = inst.master_key_file
    assert f.is_file(), "master key file was not created"
    mode = stat.S_IMODE(os.stat(f).st_mode)
    assert mode == 0o600, f"master key file mode is {oct(mode)}, expected 0o600"
    data = os.path.realpath(inst.data_dir)
    assert not os.path.realpath(f).startswith(data + os.sep)
    entries = keyring_entries(f.read_text())
    assert entries, "master key file holds no key"
    import base64

    for e in entries:
        assert len(base64.b64decode(e, validate=True)) == 32
    # Nothing that looks like the keyring lives in the data dir.
    for p in inst.data_dir.rglob("*"):
        assert p.name not in ("master.key",), f"a master key file inside the data dir: {p}"


def test_tls_certificate_and_fingerprint(inst):
    assert inst.cert_path, f"no 'TLS certificate: <path>' line:\n{inst.last_stdout}"
    assert os.path.realpath(inst.cert_path) == os.path.realpath(inst.data_dir / "tls" / "cert.pem")
    assert (inst.data_dir / "tls" / "key.pem").is_file()
    assert inst.fingerprint, f"no 'TLS certificate SHA-256 fingerprint: ...' line:\n{inst.last_stdout}"
    assert re.fullmatch(r"[0-9A-F]{2}(:[0-9A-F]{2}){31}", inst.fingerprint), inst.fingerprint
    der = first_pem_der(inst.cert_path)
    assert inst.fingerprint == fingerprint(der), "printed fingerprint is not the SHA-256 of the cert file's DER"
    # ... and it is the certificate the server actually presents.
    assert fingerprint(presented_cert_der(inst.port)) == inst.fingerprint


def test_certificate_verifies_for_127_0_0_1(inst):
    # requests verifies the chain *and* the host name against the printed cert.
    r = requests.get(f"https://127.0.0.1:{inst.port}/api/health", verify=str(inst.cert_path), timeout=10)
    assert r.status_code == 200


def test_second_start_does_not_print_owner_key_again(inst):
    owner = inst.owner_key
    fpr = inst.fingerprint
    inst.restart()
    inst.settle()
    assert "Owner API key" not in inst.last_stdout, inst.last_stdout.replace(owner, owner[:8] + "…")
    assert owner not in inst.last_stdout
    assert "Gatehouse listening on https://127.0.0.1:" in inst.last_stdout
    # Same data: the owner key still works, and the certificate was kept.
    r = inst.api("GET", "/api/provider-keys")
    assert r.status_code == 200, r.text
    assert fingerprint(presented_cert_der(inst.port)) == fpr


def test_sigterm_stops_cleanly(inst):
    assert inst.stop() == 0, f"serve exited with {inst.last_exit} on SIGTERM (expected a clean exit 0)"
    assert not inst.running


def test_init_command(gatehouse):
    g = gatehouse(start=False)
    res = g.cli("init")
    assert res.rc == 0, res.stderr
    lines = [l for l in res.stdout.splitlines() if l.startswith("Owner API key (shown once): ")]
    assert len(lines) == 1, res.stdout
    key = lines[0].split(": ", 1)[1].strip()
    assert API_KEY_RE.match(key)
    assert g.master_key_file.is_file()
    assert stat.S_IMODE(os.stat(g.master_key_file).st_mode) == 0o600
    assert (g.data_dir / "gatehouse.sqlite").is_file()

    again = g.cli("init")
    assert again.rc == 2, f"second init: rc={again.rc}"
    assert_one_error_line(again.stderr)
    assert "Owner API key" not in again.stdout

    # serve on the initialised dir does not print an owner key, and the init key works.
    g.start()
    g.settle()
    assert "Owner API key" not in g.last_stdout
    g.owner_key = key
    assert g.api("GET", "/api/provider-keys").status_code == 200
