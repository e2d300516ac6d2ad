"""Runs last (file name order): no secret the suite created or received may appear in any data
dir file (database, WAL, SHM, certificates...) or in any captured server/CLI output, in plain,
base64 (standard and URL-safe, all three alignments), hex or URL-encoded form.

Exempt by design: the `Owner API key (shown once)` line where serve/init print it, and the
stdout of the CLI commands that create a key (`init`, `keys create`), which show it once.
"""

from __future__ import annotations

import base64

import pytest

from ghtest import REGISTRY, Registry, canary_forms


def test_scanner_finds_every_encoding(tmp_path):
    """Self-test of the scanner on a private registry."""
    secret = "sk-canary-SelfTest0123456789abcdefXYZ"
    reg = Registry()
    reg.add_canary(secret, "provider", "self-test secret")
    d = tmp_path / "data"
    d.mkdir()
    reg.add_data_dir(d)
    names = [name for name, _ in canary_forms(secret.encode())]
    for i, (name, form) in enumerate(canary_forms(secret.encode())):
        (d / f"f{i}.bin").write_bytes(b"xx" + form + b"yy")
    # A base64 of the secret embedded at each alignment inside a longer value.
    for k in (0, 1, 2):
        (d / f"b64-{k}.bin").write_bytes(base64.b64encode(b"Q" * k + secret.encode() + b"tail"))
        (d / f"b64url-{k}.bin").write_bytes(base64.urlsafe_b64encode(b"Q" * k + secret.encode() + b"tail"))
    owner = tmp_path / "serve.stdout"
    owner.write_text(f"Owner API key (shown once): {secret}\nlistening\n")
    reg.add_output(owner, "owner-line")
    shown = tmp_path / "create.stdout"
    shown.write_text(secret)
    reg.add_output(shown, "key-display")
    findings, scanned, exempt = reg.scan()
    flagged = {f.split(":")[0] for f in findings}
    for i, name in enumerate(names):
        assert str(d / f"f{i}.bin") in flagged, f"scanner missed form {name}"
    for k in (0, 1, 2):
        assert str(d / f"b64-{k}.bin") in flagged, f"missed base64 at alignment {k}"
        assert str(d / f"b64url-{k}.bin") in flagged, f"missed base64url at alignment {k}"
    assert str(owner) not in flagged and str(shown) not in flagged
    assert exempt == 1
    assert all(secret not in f for f in findings), "a finding printed the secret"


def test_no_secret_anywhere():
    if not REGISTRY.canaries or not (REGISTRY.data_dirs or REGISTRY.outputs):
        pytest.skip("nothing registered: run the whole suite")
    findings, scanned, exempt = REGISTRY.scan()
    kinds = {}
    for c in REGISTRY.canaries.values():
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    databases = [p for d in REGISTRY.data_dirs for p in d.rglob("gatehouse.sqlite*")]
    print(f"canary scan: {len(REGISTRY.canaries)} canaries {kinds}, {scanned} files scanned "
          f"({len(databases)} database files), {exempt} exempt")
    shown = findings[:60]
    more = f"\n... and {len(findings) - len(shown)} more" if len(findings) > len(shown) else ""
    assert not findings, f"{len(findings)} secret leak(s):\n" + "\n".join(shown) + more
    assert databases, "no gatehouse.sqlite file was scanned"
