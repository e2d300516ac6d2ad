"""Transport: TLS 1.3 only, plaintext on the TLS port, --plain-http only on loopback."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
import requests

from ghtest import assert_one_error_line, poll_until, write_self_signed


def client_ctx(inst, **kw) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(inst.cert_path))
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def test_handshake_negotiates_tls13(inst):
    ctx = client_ctx(inst)  # verifies the chain and the 127.0.0.1 host name
    with socket.create_connection(("127.0.0.1", inst.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.version() == "TLSv1.3"


def test_tls12_only_client_is_refused(inst):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    raw = socket.create_connection(("127.0.0.1", inst.port), timeout=5)
    try:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            # Should not get here; if it did, show what was negotiated.
            pytest.fail(f"TLS 1.2 handshake succeeded ({s.version()})")
    finally:
        raw.close()
    # The server is still fine afterwards.
    assert inst.api("GET", "/api/health", key=None).status_code == 200


def test_plaintext_http_on_tls_port_gets_400_and_close(inst):
    deadline = time.monotonic() + 2.0
    buf = b""
    closed = False
    with socket.create_connection(("127.0.0.1", inst.port), timeout=2) as s:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            buf += chunk
    assert buf.startswith(b"HTTP/1.1 400"), f"got {buf[:200]!r}"
    _, _, body = buf.partition(b"\r\n\r\n")
    assert b"https" in body.lower(), f"body should point to https: {body[:300]!r}"
    assert closed, "the server kept the plaintext connection open"
    assert inst.api("GET", "/api/health", key=None).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_plain_http_refused_on_non_loopback(gatehouse, host):
    g = gatehouse(start=False)
    res = g.serve_expect_exit("--plain-http", "--host", host)
    assert res.rc in (1, 2), f"serve --plain-http --host {host}: rc={res.rc}\n{res.stderr}"
    assert_one_error_line(res.stderr, ("gatehouse: ", "Error: "))
    assert "Gatehouse listening" not in res.stdout
    assert not res.port_opened, "a port was opened before refusing"


def test_plain_http_on_loopback_works(gatehouse):
    g = gatehouse(True, "--plain-http")
    assert g.scheme == "http", g.last_stdout
    assert f"Gatehouse listening on http://127.0.0.1:{g.port}" in g.last_stdout
    r = requests.get(f"http://127.0.0.1:{g.port}/api/health", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert g.api("GET", "/api/provider-keys").status_code == 200


# --- certificate reload on SIGHUP -------------------------------------------------------------

def _peer_fingerprint(port: int) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def _health_over(sock) -> bytes:
    """One keep-alive `GET /api/health` on an open TLS socket; the whole response."""
    sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = b""
    while b'{"status":"ok"}' not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def _new_self_signed(cert: Path, key: Path) -> str:
    """Writes a fresh P-256 certificate for 127.0.0.1; returns its SHA-256 (hex of DER)."""
    return write_self_signed(cert, key, common_name="reloaded")


def test_sighup_reloads_the_certificate_without_dropping_connections(gatehouse):
    g = gatehouse()
    cert = g.cert_path
    key = cert.parent / "key.pem"
    assert key.exists(), f"expected the private key next to {cert}"
    before = _peer_fingerprint(g.port)

    # A keep-alive connection opened before the reload, mid-conversation.
    ctx = client_ctx(g)
    raw = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    old = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    assert _health_over(old).startswith(b"HTTP/1.1 200")

    after = _new_self_signed(cert, key)
    assert after != before
    os.kill(g.proc.pid, signal.SIGHUP)
    assert poll_until(lambda: _peer_fingerprint(g.port) == after, timeout=5), "new connections never saw the new certificate"

    # The old connection still works, on its old certificate.
    assert _health_over(old).startswith(b"HTTP/1.1 200")
    assert hashlib.sha256(old.getpeercert(binary_form=True)).hexdigest() == before
    old.close()
    assert g.running, "SIGHUP must not stop the server"

    # A broken pair is refused; the server keeps serving the last good certificate.
    cert.write_text("not a certificate\n")
    os.kill(g.proc.pid, signal.SIGHUP)
    time.sleep(0.5)
    assert g.running
    assert _peer_fingerprint(g.port) == after
    assert requests.get(f"https://127.0.0.1:{g.port}/api/health", verify=False, timeout=5).status_code == 200
    err = Path(g.last_stderr_path).read_text()
    assert "reload failed" in err and "stays in use" in err, err[-2000:]


@pytest.mark.parametrize("args", [
    ("--max-connections", "0"), ("--header-timeout", "0"), ("--idle-timeout", "-1"),
    ("--max-header-bytes", "10"), ("--max-body-bytes", "1"), ("--upstream-connect-timeout", "nan"),
    ("--max-header-count", "1"), ("--max-json-depth", "1000"),
])
def test_bad_transport_limits_are_refused_before_listening(gatehouse, args):
    g = gatehouse(start=False)
    res = g.serve_expect_exit(*args)
    assert res.rc in (1, 2), f"serve {args}: rc={res.rc}\n{res.stderr}"
    assert args[0] in res.stderr, res.stderr
    assert not res.port_opened
