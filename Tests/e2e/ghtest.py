"""Shared helpers for the Gatehouse end-to-end suite.

Everything here drives the real `gatehouse` binary through its public surface: the command
line, stdout/stderr and the HTTPS admin API. Nothing imports Gatehouse code.

The module keeps one session-wide ``REGISTRY`` of every data directory, every captured
output file and every secret ("canary") the tests create or receive, so that
``test_zz_canary_scan.py`` can check at the end that no secret was written anywhere it
must not be.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json as jsonlib
import os
import re
import secrets
import signal
import socket
import ssl
import string
import subprocess
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

LISTEN_RE = re.compile(r"Gatehouse listening on (https?)://127\.0\.0\.1:(\d+)")
OWNER_LINE_PREFIX = "Owner API key (shown once): "
OWNER_RE = re.compile(r"^Owner API key \(shown once\): (\S+)[ \t]*\r?$", re.M)
CERT_RE = re.compile(r"^TLS certificate: (.+?)[ \t]*\r?$", re.M)
FPR_RE = re.compile(r"^TLS certificate SHA-256 fingerprint: (\S+)[ \t]*\r?$", re.M)
GATE_KEY_RE = re.compile(r"gate_(?:api|read|proxy)_[0-9A-Za-z]{50}")
API_KEY_RE = re.compile(r"^gate_api_[0-9A-Za-z]{50}$")
READ_KEY_RE = re.compile(r"^gate_read_[0-9A-Za-z]{50}$")
PROXY_KEY_RE = re.compile(r"^gate_proxy_[0-9A-Za-z]{50}$")
REQUEST_ID_HEADER = "Gatehouse-Request-Id"

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase

# How long a server may take to print its "listening" line.
START_TIMEOUT = 30.0
# How long a server that must refuse to start may take to exit ("a few seconds").
REFUSE_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------
# Canary registry
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Canary:
    value: bytes
    kind: str  # "provider" | "gatehouse" | "master"
    label: str

    @property
    def preview(self) -> str:
        """First 8 characters only: never print a whole secret."""
        return self.value[:8].decode("latin-1") + "…"


@dataclasses.dataclass
class OutputFile:
    path: Path
    # "scan": scanned whole. "owner-line": the first `Owner API key (shown once)` line is
    # exempt (serve/init print the owner key there by design). "key-display": the stdout of a
    # command that creates a key and shows it once by design: not scanned.
    mode: str = "scan"


def canary_forms(value: bytes) -> list[tuple[str, bytes]]:
    """Every encoding of `value` the scan looks for, as (form name, bytes)."""
    forms: list[tuple[str, bytes]] = [("plain", value)]
    to_url = bytes.maketrans(b"+/", b"-_")
    for k in (0, 1, 2):
        enc = base64.b64encode(b"\0" * k + value).rstrip(b"=")
        # Keep only the characters that depend on the secret alone: drop the ones that mix
        # with the k prefix bytes and the trailing one that mixes with whatever follows.
        start = (8 * k + 5) // 6
        end = (8 * (k + len(value))) // 6
        core = enc[start:end]
        forms.append((f"base64 (offset {k})", core))
        forms.append((f"base64url (offset {k})", core.translate(to_url)))
    forms.append(("hex", value.hex().encode()))
    forms.append(("HEX", value.hex().upper().encode()))
    forms.append(("url-encoded", urllib.parse.quote(value, safe="").encode()))
    forms.append(("url-encoded (plus)", urllib.parse.quote_plus(value).encode()))
    forms.append(("json-escaped", value.replace(b"/", b"\\/")))
    seen: set[bytes] = set()
    out = []
    for name, form in forms:
        if form in seen or len(form) < 12:
            continue
        seen.add(form)
        out.append((name, form))
    return out


class Registry:
    def __init__(self) -> None:
        self.data_dirs: list[Path] = []
        self.outputs: list[OutputFile] = []
        self.canaries: dict[bytes, Canary] = {}
        self.excluded_paths: set[Path] = set()  # master key files

    # registration -------------------------------------------------------------------------
    def add_data_dir(self, path: Path) -> None:
        if path not in self.data_dirs:
            self.data_dirs.append(path)

    def add_output(self, path: Path, mode: str = "scan") -> None:
        self.outputs.append(OutputFile(Path(path), mode))

    def exclude(self, path: Path) -> None:
        self.excluded_paths.add(Path(os.path.realpath(path)))

    def add_canary(self, value, kind: str, label: str) -> None:
        if isinstance(value, str):
            value = value.encode()
        if not value or len(value) < 12:
            return
        if value not in self.canaries:
            self.canaries[value] = Canary(value, kind, label)

    def add_gatehouse_key(self, key: str, label: str) -> None:
        """A Gatehouse key is secret whole, and its 32-character secret part is secret alone."""
        self.add_canary(key, "gatehouse", label)
        m = re.fullmatch(r"gate_(?:api|read|proxy)_[0-9A-Za-z]{12}([0-9A-Za-z]{32})[0-9A-Za-z]{6}", key)
        if m:
            self.add_canary(m.group(1), "gatehouse", label + " (secret part)")

    def add_master_keyring_text(self, text: str, label: str) -> None:
        for b64 in keyring_entries(text):
            self.add_canary(b64, "master", label + " (base64)")
            try:
                raw = base64.b64decode(b64, validate=True)
            except Exception:
                continue
            self.add_canary(raw, "master", label + " (raw bytes)")

    def secrets_of(self, *kinds: str) -> list[Canary]:
        return [c for c in self.canaries.values() if c.kind in kinds]

    # scanning -----------------------------------------------------------------------------
    def files_to_scan(self) -> list[tuple[Path, str]]:
        files: list[tuple[Path, str]] = []
        for d in self.data_dirs:
            if not d.exists():
                continue
            for p in sorted(d.rglob("*")):
                if p.is_file() and Path(os.path.realpath(p)) not in self.excluded_paths:
                    files.append((p, "scan"))
        for o in self.outputs:
            if o.path.exists():
                files.append((o.path, o.mode))
        return files

    def scan(self) -> tuple[list[str], int, int]:
        """Returns (findings, files scanned, files exempt). Findings never contain a secret."""
        findings: list[str] = []
        forms = [(c, name, form) for c in self.canaries.values() for name, form in canary_forms(c.value)]
        scanned = exempt = 0
        for path, mode in self.files_to_scan():
            if mode == "key-display":
                exempt += 1
                continue
            data = path.read_bytes()
            if mode == "owner-line":
                data = strip_first_owner_line(data)
            scanned += 1
            for canary, name, form in forms:
                if form in data:
                    findings.append(f"{path}: {canary.label} [{canary.preview}] found as {name}")
        return findings, scanned, exempt


def strip_first_owner_line(data: bytes) -> bytes:
    prefix = OWNER_LINE_PREFIX.encode()
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            del lines[i]
            break
    return b"\n".join(lines)


REGISTRY = Registry()


def keyring_entries(text: str) -> list[str]:
    """The base64 values of a keyring text: one base64 value, or `<version>:<base64>` entries
    (one per line or comma-separated); lines starting with `#` are comments."""
    out = []
    for raw_line in re.split(r"[\n\r]", text):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split(","):
            part = part.strip()
            if part:
                out.append(part.split(":", 1)[1].strip() if ":" in part else part)
    return out


def new_provider_secret(label: str = "provider API key") -> str:
    """A provider API key used as a canary: it must never show up anywhere but in requests."""
    rand = "".join(secrets.choice(BASE62) for _ in range(32))
    secret = f"sk-canary-{rand}"
    REGISTRY.add_canary(secret, "provider", label)
    REGISTRY.add_canary(rand, "provider", label + " (random part)")
    return secret


def new_master_key_b64(label: str = "test master key") -> str:
    b64 = base64.b64encode(os.urandom(32)).decode()
    REGISTRY.add_master_keyring_text(b64, label)
    return b64


# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------


def write_self_signed(cert: Path, key: Path, common_name: str = "gatehouse-test", dns: tuple = (),
                      ips: tuple = ("127.0.0.1",)) -> str:
    """Writes a fresh P-256 self-signed certificate (valid one day) and its key, each replaced
    atomically; returns the SHA-256 (hex) of the certificate's DER."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import datetime
    import ipaddress

    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pk.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.SubjectAlternativeName(sans), critical=False)
         .sign(pk, hashes.SHA256()))
    tmp_key, tmp_cert = key.with_suffix(".tmp-key"), cert.with_suffix(".tmp-cert")
    tmp_key.write_bytes(pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    os.chmod(tmp_key, 0o600)
    tmp_cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)
    return hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def nonempty_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_one_error_line(stderr: str, prefixes: tuple[str, ...] = ("gatehouse: ",)) -> str:
    lines = nonempty_lines(stderr)
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith(prefixes), f"stderr line should start with {prefixes}: {lines[0]!r}"
    return lines[0]


def parse_time(value: str) -> datetime:
    assert isinstance(value, str), f"time should be an ISO 8601 string, got {value!r}"
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert dt.tzinfo is not None and dt.utcoffset() == timedelta(0), f"time should be UTC: {value!r}"
    return dt


def iso_in(delta: timedelta) -> str:
    return (datetime.now(timezone.utc) + delta).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def base62_checksum(body: str) -> str:
    import zlib

    v = zlib.crc32(body.encode()) & 0xFFFFFFFF
    out = []
    for _ in range(6):
        out.append(BASE62[v % 62])
        v //= 62
    return "".join(reversed(out))


def tamper_key(key: str, keep_checksum_valid: bool) -> str:
    """The key with one character of its secret part changed."""
    prefix_len = key.index("_", 5) + 1
    i = prefix_len + 12 + 5  # inside the 32-character secret part
    c = key[i]
    repl = "A" if c != "A" else "B"
    changed = key[:i] + repl + key[i + 1 :]
    if keep_checksum_valid:
        body = changed[:-6]
        changed = body + base62_checksum(body)
    return changed


def poll_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> Optional[float]:
    """Seconds until `pred()` was first true, or None if it never was within `timeout`."""
    start = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(interval)


def assert_error(resp: requests.Response, status, etype) -> dict:
    """Checks the error contract: status, `{"error":{"type","message","request_id"}}`."""
    statuses = status if isinstance(status, (tuple, list, set)) else (status,)
    assert resp.status_code in statuses, (
        f"{resp.request.method} {resp.request.path_url}: expected {statuses}, got {resp.status_code}: {resp.text[:500]}"
    )
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {resp.text[:500]!r}")
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"bad error shape: {body}"
    err = body["error"]
    if isinstance(etype, dict):  # status -> expected type
        etypes = (etype[resp.status_code],)
    elif isinstance(etype, (tuple, list, set)):
        etypes = tuple(etype)
    else:
        etypes = (etype,)
    assert err.get("type") in etypes, f"error.type {err.get('type')!r} not in {etypes}: {body}"
    assert isinstance(err.get("message"), str) and err["message"], f"error.message missing: {body}"
    assert isinstance(err.get("request_id"), str) and err["request_id"], f"error.request_id missing: {body}"
    assert err["request_id"] == resp.headers.get(REQUEST_ID_HEADER), (
        f"error.request_id {err['request_id']!r} != header {resp.headers.get(REQUEST_ID_HEADER)!r}"
    )
    return err


# Status -> error type, for tests that accept 400 or 422.
BAD_INPUT = {400: "invalid_request", 422: "validation_error"}


def assert_bad_input(resp: requests.Response) -> dict:
    return assert_error(resp, (400, 422), BAD_INPUT)



def assert_no_secret(data: bytes, where: str) -> None:
    """No provider or master-key canary, in any encoding, in `data` (e.g. a raw response)."""
    for c in REGISTRY.secrets_of("provider", "master"):
        for name, form in canary_forms(c.value):
            assert form not in data, f"{where} contains {c.label} [{c.preview}] as {name}"


def assert_openai_error(resp, status: int) -> dict:
    """The /v1 error contract: `status` and `{"error":{"message","type","code"}}`, no secret.

    `resp` is anything with `status_code`, `content` and `json()` (requests, httpx, RawResponse)."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.content[:300]!r}"
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {resp.content[:300]!r}")
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not the OpenAI error shape: {body}"
    err = body["error"]
    for field in ("message", "type", "code"):
        assert isinstance(err.get(field), str) and err[field], f"error.{field} missing or empty: {body}"
    assert_no_secret(resp.content, f"{status} error body")
    return err


# --------------------------------------------------------------------------------------------
# Raw HTTP/1.1 over TLS (byte-exact requests, for tests of the server's HTTP parser)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RawResponse:
    """One response parsed from raw bytes; quacks like `requests.Response` where tests need it."""
    status_code: int
    reason: str
    header_list: list  # [(name, value)] as received
    content: bytes

    @property
    def headers(self) -> "requests.structures.CaseInsensitiveDict":
        return requests.structures.CaseInsensitiveDict(self.header_list)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return jsonlib.loads(self.content)


_STATUS_LINE_RE = re.compile(rb"HTTP/1\.1 (\d{3})(?: ([^\r\n]*))?")


def parse_responses(data: bytes, limit: Optional[int] = None) -> tuple[list[RawResponse], bytes]:
    """Splits `data` into complete, well-formed HTTP/1.1 responses.

    Returns (responses, rest): `rest` is what is left once no further complete, well-formed
    response can be parsed (b"" when `data` is exactly a sequence of responses), or what
    follows the `limit`-th response. A response without Content-Length or chunked framing runs
    to the end of `data`."""
    out: list[RawResponse] = []
    while data and (limit is None or len(out) < limit):
        head, sep, after = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        m = _STATUS_LINE_RE.fullmatch(lines[0])
        if not m:
            break
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip() or not re.fullmatch(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                return out, data
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        status = int(m.group(1))
        lower = {k.lower(): v for k, v in headers}
        if status in (204, 304) or 100 <= status < 200:
            body, rest = b"", after
        elif "chunked" in lower.get("transfer-encoding", "").lower():
            body, rest, ok = b"", after, False
            while True:
                size_line, crlf, tail = rest.partition(b"\r\n")
                try:
                    size = int(size_line.split(b";")[0].strip(), 16) if crlf else -1
                except ValueError:
                    size = -1
                if size < 0 or len(tail) < size + 2 or tail[size:size + 2] != b"\r\n":
                    break
                if size == 0:
                    rest, ok = tail[2:], True
                    break
                body += tail[:size]
                rest = tail[size + 2:]
            if not ok:
                break
        elif "content-length" in lower:
            try:
                n = int(lower["content-length"])
            except ValueError:
                break
            if len(after) < n:
                break
            body, rest = after[:n], after[n:]
        else:
            body, rest = after, b""
        out.append(RawResponse(status, (m.group(2) or b"").decode("latin-1"), headers, body))
        data = rest
    return out, data


class RawReply(NamedTuple):
    data: bytes  # every byte received
    closed: bool  # the server closed the connection (EOF or reset) within the time allowed
    how: str  # "eof", "reset: ...", or "open" (still open when the time ran out)
    elapsed: float  # seconds from the start of the wait until close / time-out

    def describe(self) -> str:
        responses, rest = parse_responses(self.data)
        status = [f"{r.status_code} {r.reason}" for r in responses]
        bad = f" + {len(rest)} bytes that are not a well-formed response" if rest else ""
        return (f"responses {status or 'none'}{bad}, connection {self.how} after {self.elapsed:.2f}s; "
                f"first bytes: {self.data[:200]!r}")


def tls_client_context(inst: "Gatehouse") -> ssl.SSLContext:
    """A client context that trusts the instance's certificate (and checks 127.0.0.1)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=inst.verify)
    return ctx


class RawTLS:
    """One TLS connection to an instance for byte-exact HTTP: ``with RawTLS(inst) as c: ...``.

    Every read is bounded by a timeout, so a server that does not answer cannot hang a test."""

    def __init__(self, inst: "Gatehouse", timeout: float = 5.0, ctx: Optional[ssl.SSLContext] = None):
        raw = socket.create_connection(("127.0.0.1", inst.port), timeout=timeout)
        try:
            self.sock = (ctx or tls_client_context(inst)).wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise
        self.buf = b""  # received, not yet consumed by responses()
        self.closed_how: Optional[str] = None

    def __enter__(self) -> "RawTLS":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_once(self, timeout: float) -> bool:
        """Reads what arrives within `timeout`; False once the peer has closed."""
        if self.closed_how:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return True
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError) as e:
            self.closed_how = f"reset: {e!r}"
            return False
        if not chunk:
            self.closed_how = "eof"
            return False
        self.buf += chunk
        return True

    def read_until_close(self, timeout: float) -> RawReply:
        """Everything the server sends until it closes the connection or `timeout` runs out."""
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline and self._recv_once(deadline - time.monotonic()):
            pass
        data, self.buf = self.buf, b""
        return RawReply(data, self.closed_how is not None, self.closed_how or "open", time.monotonic() - start)

    def responses(self, n: int, timeout: float) -> list[RawResponse]:
        """Waits (at most `timeout`) for `n` complete responses and returns them; raises if
        fewer arrive or the bytes are not well-formed HTTP/1.1."""
        deadline = time.monotonic() + timeout
        while True:
            got, rest = parse_responses(self.buf, limit=n)
            if len(got) == n:
                self.buf = rest
                return got
            if time.monotonic() >= deadline or not self._recv_once(deadline - time.monotonic()):
                got, rest = parse_responses(self.buf, limit=n)
                if len(got) == n:
                    continue
                raise AssertionError(
                    f"expected {n} response(s) within {timeout}s, got {len(got)} "
                    f"(connection {self.closed_how or 'open'}); unparsed bytes: {rest[:300]!r}")


def raw_exchange(inst: "Gatehouse", data: bytes, timeout: float = 2.0) -> RawReply:
    """Sends `data` on a fresh TLS connection and reads until the server closes it (or `timeout`)."""
    with RawTLS(inst) as c:
        try:
            c.send(data)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            pass  # closed while we were still sending: what it sent before is still read
        return c.read_until_close(timeout)


# --------------------------------------------------------------------------------------------
# The binary
# --------------------------------------------------------------------------------------------


def locate_binary() -> Path:
    env = os.environ.get("GATEHOUSE_BIN")
    if env:
        return Path(env)
    out = subprocess.run(
        ["swift", "build", "--show-bin-path"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    if out.returncode != 0:
        raise RuntimeError(f"swift build --show-bin-path failed: {out.stderr.strip()}")
    return Path(out.stdout.strip()) / "gatehouse"


class CliResult(NamedTuple):
    rc: int
    stdout: str
    stderr: str

    def json(self):
        try:
            return jsonlib.loads(self.stdout)
        except ValueError:
            raise AssertionError(f"CLI stdout is not JSON (rc={self.rc}):\n{self.stdout}\nstderr:\n{self.stderr}")


class ExitResult(NamedTuple):
    rc: Optional[int]  # None: did not exit in time (it was killed)
    stdout: str
    stderr: str
    port: int
    port_opened: bool


_ALL_PROCS: list[subprocess.Popen] = []

_NO_AUTH = None
_OWNER = object()


class Gatehouse:
    """One Gatehouse installation: a data dir, a master key file path and a private HOME.

    ``start()`` runs ``gatehouse serve`` on it; ``cli()`` runs any other command on it.
    """

    def __init__(self, binary: Path, root: Path, env_master_key: Optional[str] = None):
        self.binary = Path(binary)
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.secrets_dir = self.root / "secrets"
        self.master_key_file = self.secrets_dir / "master.key"
        self.home = self.root / "home"
        self.logs = self.root / "logs"
        for d in (self.data_dir, self.home, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.env_master_key = env_master_key
        if env_master_key:
            REGISTRY.add_master_keyring_text(env_master_key, "GATEHOUSE_MASTER_KEY")
        REGISTRY.add_data_dir(self.data_dir)
        REGISTRY.exclude(self.master_key_file)

        self.proc: Optional[subprocess.Popen] = None
        self.scheme = "https"
        self.port: Optional[int] = None
        self.owner_key: Optional[str] = None
        self.cert_path: Optional[Path] = None
        self.fingerprint: Optional[str] = None
        self.last_stdout = ""
        self.last_stdout_path: Optional[Path] = None
        self.last_stderr_path: Optional[Path] = None
        self.last_exit: Optional[int] = None
        self.start_args: tuple[str, ...] = ()
        self._seq = 0
        self._session = requests.Session()

    # environment --------------------------------------------------------------------------
    def env(self, master_key=...) -> dict:
        """Process environment: private HOME, no inherited GATEHOUSE_* variables.

        `master_key`: ... = the instance's env key (if any); None = unset; str = that value.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_") and not k.startswith("XDG_")}
        env["HOME"] = str(self.home)
        env["XDG_CONFIG_HOME"] = str(self.home / ".config")
        env["XDG_DATA_HOME"] = str(self.home / ".local" / "share")
        key = self.env_master_key if master_key is ... else master_key
        if key is not None:
            env["GATEHOUSE_MASTER_KEY"] = key
            REGISTRY.add_master_keyring_text(key, "GATEHOUSE_MASTER_KEY")
        return env

    def common_args(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--master-key-file", str(self.master_key_file)]

    def _next_logs(self, what: str) -> tuple[Path, Path]:
        self._seq += 1
        base = self.logs / f"{self._seq:03d}-{what}"
        return base.with_suffix(".stdout"), base.with_suffix(".stderr")

    def register_master_key_file(self) -> None:
        if self.master_key_file.exists():
            REGISTRY.add_master_keyring_text(self.master_key_file.read_text(errors="replace"), "master key file")

    def write_master_key_file(self, text: str) -> None:
        REGISTRY.add_master_keyring_text(text, "test master key file")
        self.master_key_file.write_text(text if text.endswith("\n") else text + "\n")
        os.chmod(self.master_key_file, 0o600)

    # serve --------------------------------------------------------------------------------
    def _spawn(self, args: list[str], out: Path, err: Path, env: dict) -> subprocess.Popen:
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(
                args, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env, cwd=self.root, start_new_session=True
            )
        _ALL_PROCS.append(proc)
        return proc

    def start(self, *extra: str, timeout: float = START_TIMEOUT, master_key=...) -> "Gatehouse":
        assert self.proc is None, "already running"
        out, err = self._next_logs("serve")
        REGISTRY.add_output(out, "owner-line")
        REGISTRY.add_output(err)
        args = [str(self.binary), "serve", *self.common_args()]
        if "--port" not in extra:
            args += ["--port", "0"]
        args += list(extra)
        self.start_args = tuple(extra)
        self.proc = self._spawn(args, out, err, self.env(master_key))
        self.last_stdout_path, self.last_stderr_path = out, err
        deadline = time.monotonic() + timeout
        m = None
        while True:
            text = out.read_text(errors="replace")
            m = LISTEN_RE.search(text)
            if m:
                break
            rc = self.proc.poll()
            if rc is not None or time.monotonic() > deadline:
                if rc is None:
                    self._kill()
                self.proc = None
                why = f"exited with {rc}" if rc is not None else f"did not print 'Gatehouse listening' within {timeout}s"
                raise AssertionError(
                    f"gatehouse serve {why}\n--- stdout ---\n{redact(out.read_text(errors='replace'))}"
                    f"\n--- stderr ---\n{redact(err.read_text(errors='replace'))}"
                )
            time.sleep(0.05)
        self.scheme, self.port = m.group(1), int(m.group(2))
        self._parse_stdout(text)
        self.register_master_key_file()
        return self

    def _parse_stdout(self, text: str) -> None:
        self.last_stdout = text
        owner = OWNER_RE.search(text)
        if owner:
            REGISTRY.add_gatehouse_key(owner.group(1), "owner API key")
            if self.owner_key is None:
                self.owner_key = owner.group(1)
        cert = CERT_RE.search(text)
        if cert:
            p = Path(cert.group(1))
            self.cert_path = p if p.is_absolute() else (self.root / p)
        fpr = FPR_RE.search(text)
        if fpr:
            self.fingerprint = fpr.group(1)

    def refresh(self) -> None:
        """Re-reads the current server's stdout (for lines printed after 'listening')."""
        if self.last_stdout_path is not None and self.last_stdout_path.exists():
            self._parse_stdout(self.last_stdout_path.read_text(errors="replace"))

    def settle(self, delay: float = 0.3) -> None:
        """Waits a moment and re-reads stdout, for tests about everything a start printed."""
        time.sleep(delay)
        self.refresh()

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        self._session.close()  # idle keep-alive connections would hold up a graceful shutdown
        self._session = requests.Session()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
                self.last_exit = None
                raise AssertionError(f"gatehouse serve did not exit within {timeout}s of SIGTERM")
        self.last_exit = proc.returncode
        self.register_master_key_file()
        return proc.returncode

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)

    def restart(self, *extra: str, master_key=...) -> "Gatehouse":
        self.stop()
        return self.start(*(extra or self.start_args), master_key=master_key)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def serve_expect_exit(self, *extra: str, timeout: float = REFUSE_TIMEOUT, master_key=...) -> ExitResult:
        """Runs `serve` that is expected to refuse to start; watches its port meanwhile."""
        out, err = self._next_logs("serve-refused")
        REGISTRY.add_output(out, "owner-line")
        REGISTRY.add_output(err)
        port = free_port()
        args = [str(self.binary), "serve", *self.common_args(), "--port", str(port), *extra]
        proc = self._spawn(args, out, err, self.env(master_key))
        opened = False
        deadline = time.monotonic() + timeout
        rc: Optional[int] = None
        while True:
            rc = proc.poll()
            if rc is not None:
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
                rc = None
                break
            if not opened and port_accepts(port):
                opened = True
            time.sleep(0.02)
        if opened and rc is not None and port_accepts(port):
            # Our process is gone but the port still answers: another process owns it, so what
            # was seen proves nothing about ours.
            opened = False
        return ExitResult(rc, out.read_text(errors="replace"), err.read_text(errors="replace"), port, opened)

    # CLI ----------------------------------------------------------------------------------
    def cli(self, *args: str, input: Optional[str] = None, master_key=..., timeout: float = 60.0,
            common: bool = True) -> CliResult:
        """Runs `gatehouse ARGS --data-dir D --master-key-file F`; returns (rc, stdout, stderr)."""
        args = tuple(str(a) for a in args)
        shows_key = args[:1] == ("init",) or args[:2] == ("keys", "create")
        out, err = self._next_logs("cli-" + "-".join(a for a in args[:2] if not a.startswith("-")))
        REGISTRY.add_output(out, "key-display" if shows_key else "owner-line" if args[:1] == ("serve",) else "scan")
        REGISTRY.add_output(err)
        if args[:2] == ("vault", "add"):
            if "--api-key" in args:
                REGISTRY.add_canary(args[args.index("--api-key") + 1], "provider", "provider API key (CLI flag)")
            if "--api-key-stdin" in args and input:
                REGISTRY.add_canary(input.strip(), "provider", "provider API key (CLI stdin)")
        argv = [str(self.binary), *args] + (self.common_args() if common else [])
        try:
            p = subprocess.run(
                argv, input=(input or "").encode(), capture_output=True, env=self.env(master_key), cwd=self.root,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            out.write_bytes(e.stdout or b"")
            err.write_bytes(e.stderr or b"")
            raise AssertionError(f"gatehouse {' '.join(args)} did not finish within {timeout}s")
        out.write_bytes(p.stdout)
        err.write_bytes(p.stderr)
        stdout, stderr = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        for key in GATE_KEY_RE.findall(stdout):
            REGISTRY.add_gatehouse_key(key, "Gatehouse key shown by the CLI")
        self.register_master_key_file()
        return CliResult(p.returncode, stdout, stderr)

    # HTTP ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self.port is not None, "server not started"
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def verify(self):
        if self.scheme == "http":
            return True
        if self.cert_path is None:
            self.refresh()
        assert self.cert_path is not None, "no 'TLS certificate: <path>' line was printed"
        return str(self.cert_path)

    def api(self, method: str, path: str, json=None, key=_OWNER, *, data=None, headers=None,
            timeout: float = 5.0) -> requests.Response:
        """An admin API request. `key` defaults to the owner key; `key=None` sends no auth."""
        h = dict(headers or {})
        if key is _OWNER:
            if self.owner_key is None:
                self.refresh()
            key = self.owner_key
            assert key, "no owner key known for this instance"
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        if isinstance(json, dict) and isinstance(json.get("api_key"), str):
            REGISTRY.add_canary(json["api_key"], "provider", "provider API key (API request)")
        resp = self._session.request(
            method, self.base_url + path, json=json, data=data, headers=h, verify=self.verify, timeout=timeout
        )
        # Invariants of every response.
        assert resp.headers.get(REQUEST_ID_HEADER), f"{method} {path} ({resp.status_code}): no {REQUEST_ID_HEADER} header"
        for c in REGISTRY.secrets_of("provider", "master"):
            for name, form in canary_forms(c.value):
                assert form not in resp.content, (
                    f"{method} {path} ({resp.status_code}) response contains {c.label} [{c.preview}] as {name}"
                )
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("key"), str):
            REGISTRY.add_gatehouse_key(body["key"], f"Gatehouse key from {method} {path}")
        return resp

    # convenience --------------------------------------------------------------------------
    def create_provider_key(self, name: str = "pk", provider: str = "openai", base_url: Optional[str] = None,
                            secret: Optional[str] = None) -> tuple[dict, str]:
        secret = secret or new_provider_secret()
        body = {"name": name, "provider": provider, "api_key": secret}
        if base_url is not None:
            body["base_url"] = base_url
        r = self.api("POST", "/api/provider-keys", json=body)
        assert r.status_code == 201, f"create provider key: {r.status_code} {r.text}"
        return r.json(), secret

    def create_proxy_key(self, provider_key_id: str, name: str = "proxy", **fields) -> dict:
        r = self.api("POST", "/api/proxy-keys", json={"name": name, "provider_key_id": provider_key_id, **fields})
        assert r.status_code == 201, f"create proxy key: {r.status_code} {r.text}"
        return r.json()

    def create_org_key(self, kind: str = "api", name: str = "automation") -> dict:
        r = self.api("POST", "/api/api-keys", json={"name": name, "kind": kind})
        assert r.status_code == 201, f"create api key: {r.status_code} {r.text}"
        return r.json()


def redact(text: str) -> str:
    """Output for failure messages: every known secret replaced by its 8-character preview."""
    for c in REGISTRY.canaries.values():
        try:
            s = c.value.decode()
        except UnicodeDecodeError:
            continue
        text = text.replace(s, c.preview)
    return text


def kill_all() -> None:
    for p in _ALL_PROCS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass

