#!/usr/bin/env python3
"""Helpers for Benchmarks/run (standard library only).

  benchtool.py ttfb CONFIG.json              time to the first SSE event through each target, on
                                             the wire (raw socket) and through http.client
  benchtool.py drip-upstream --port P ...    an OpenAI-style upstream that drips SSE slowly
  benchtool.py open-streams ...              hold N concurrent streams open, sample RSS
  benchtool.py report --dir TMP --out FILE   the table, the targets and the results file
  benchtool.py rss PID                       VmRSS (kB) of PID and all its descendants

Every network call has a timeout, and every loop is bounded in count and time.
"""

import argparse
import asyncio
import http.client
import json
import os
import socket
import ssl
import statistics
import sys
import time
import urllib.parse

# --- RSS of a process tree --------------------------------------------------------------------


def tree_pids(pid):
    """pid and every descendant (through /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def rss_kb(pid):
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


# --- streaming time to first byte -------------------------------------------------------------


def _connection(url, cafile, timeout):
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = False  # self-signed certificates for 127.0.0.1
        return http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout, context=ctx), u.path
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout), u.path


def _one_stream(conn, path, headers, body):
    """Sends one streamed request on a keep-alive connection; returns (seconds to the first
    `data:` line of the body, whether the stream ended with [DONE] and a 200)."""
    start = time.perf_counter()
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    first = None
    done = False
    while True:
        line = resp.readline()
        if not line:
            break
        if first is None and line.startswith(b"data:"):
            first = time.perf_counter() - start
        if line.startswith(b"data: [DONE]"):
            done = True
    resp.read()
    return first, resp.status == 200 and done and first is not None


class _RawError(Exception):
    pass


def _raw_connection(url, cafile, timeout):
    """A plain socket (TLS-wrapped for https) to `url`'s host, with TCP_NODELAY."""
    u = urllib.parse.urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = False  # self-signed certificates for 127.0.0.1
        sock = ctx.wrap_socket(sock)
    return sock, u.path


def _raw_request(path, headers, body):
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _raw_stream(sock, request):
    """Sends one streamed request on a keep-alive socket and reads the whole answer
    (Content-Length or chunked framing); returns (seconds to the first byte of the answer,
    seconds to the first `data:` of its body, whether it was a 200 whose body ends the stream
    with [DONE]). No HTTP library: the times are taken when a read returns (the TLS record
    decrypted), and the first event's is the first read after which the bytes received hold
    the end of the head followed by `data:`, so a proxy that sends its head early does not
    count as having answered."""
    start = time.perf_counter()
    sock.sendall(request)
    buf, first, first_event, seen = b"", None, None, b""

    def more():
        nonlocal buf, first, first_event, seen
        data = sock.recv(65536)
        if not data:
            raise _RawError("connection closed")
        now = time.perf_counter() - start
        if first is None:
            first = now
        if first_event is None:
            seen += data
            end = seen.find(b"\r\n\r\n")
            if end >= 0 and seen.find(b"data:", end) >= 0:
                first_event = now
        buf += data

    while b"\r\n\r\n" not in buf:
        more()
    head, _, buf = buf.partition(b"\r\n\r\n")
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip().lower()
    body = b""
    if b"content-length" in fields:
        need = int(fields[b"content-length"])
        while len(buf) < need:
            more()
        body = buf[:need]
    elif fields.get(b"transfer-encoding") == b"chunked":
        while True:
            while b"\r\n" not in buf:
                more()
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                more()
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    else:
        raise _RawError("no framing")
    return first, first_event, head.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in body and first_event is not None


def ttfb(config_path):
    """CONFIG: {"rounds": R, "n": N, "warmup": W, "timeout": T, "targets": [{"name", "url",
    "headers", "body", "cafile"}]}. Targets are interleaved round by round, each on its own
    keep-alive connection (reopened after an error). Prints one JSON object per target."""
    with open(config_path) as f:
        cfg = json.load(f)
    timeout = cfg.get("timeout", 10)
    deadline = time.monotonic() + cfg.get("max_seconds", 300)
    state = {}
    for t in cfg["targets"]:
        state[t["name"]] = {"samples": [], "errors": 0, "round_medians": [], "conn": None,
                            "raw": [], "raw_errors": 0, "raw_round_medians": [],
                            "event": [], "event_round_medians": []}
    for rnd in range(cfg["rounds"]):
        for t in cfg["targets"]:
            s = state[t["name"]]
            headers = dict(t.get("headers", {}))
            headers["Content-Type"] = "application/json"
            body = t["body"].encode()
            samples = []
            for i in range(cfg["warmup"] + cfg["n"]):
                if time.monotonic() > deadline:
                    s["errors"] += 1
                    break
                try:
                    if s["conn"] is None:
                        s["conn"], s["path"] = _connection(t["url"], t.get("cafile"), timeout)
                    first, ok = _one_stream(s["conn"], s["path"], headers, body)
                except (OSError, http.client.HTTPException):
                    ok, first = False, None
                    if s["conn"] is not None:
                        s["conn"].close()
                    s["conn"] = None
                if not ok:
                    s["errors"] += 1
                elif i >= cfg["warmup"]:
                    samples.append(first)
            s["samples"] += samples
            if samples:
                s["round_medians"].append(round(statistics.median(samples) * 1e6))
            # The same, through a raw socket: the time to the answer's first byte and to its first
            # event on the wire, without the HTTP library's parsing of the head and the framing.
            raw, event, sock = [], [], None
            for i in range(cfg["warmup"] + cfg["n"]):
                if time.monotonic() > deadline:
                    s["raw_errors"] += 1
                    break
                try:
                    if sock is None:
                        sock, path = _raw_connection(t["url"], t.get("cafile"), timeout)
                        request = _raw_request(path, headers, body)
                    first, first_event, ok = _raw_stream(sock, request)
                except (OSError, ValueError, _RawError):
                    ok, first, first_event = False, None, None
                    if sock is not None:
                        sock.close()
                    sock = None
                if not ok:
                    s["raw_errors"] += 1
                elif i >= cfg["warmup"]:
                    raw.append(first)
                    event.append(first_event)
            if sock is not None:
                sock.close()
            s["raw"] += raw
            s["event"] += event
            if raw:
                s["raw_round_medians"].append(round(statistics.median(raw) * 1e6))
                s["event_round_medians"].append(round(statistics.median(event) * 1e6))
    for t in cfg["targets"]:
        s = state[t["name"]]
        if s["conn"] is not None:
            s["conn"].close()
        xs = sorted(s["samples"])
        out = {"name": t["name"], "count": len(xs), "errors": s["errors"], "round_medians_us": s["round_medians"]}
        if xs:
            out["p50_us"] = round(statistics.median(xs) * 1e6)
            out["p90_us"] = round(xs[min(len(xs) - 1, int(len(xs) * 0.9))] * 1e6)
            out["p99_us"] = round(xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1e6)
        out["first_byte_errors"] = s["raw_errors"]
        out["first_byte_round_medians_us"] = s["raw_round_medians"]
        out["first_event_round_medians_us"] = s["event_round_medians"]
        if s["raw"]:
            out["first_byte_p50_us"] = round(statistics.median(s["raw"]) * 1e6)
            out["first_event_p50_us"] = round(statistics.median(s["event"]) * 1e6)
        print(json.dumps(out), flush=True)


# --- a slow SSE upstream ----------------------------------------------------------------------

CHUNK = (
    'data: {"id":"chatcmpl-drip","object":"chat.completion.chunk","created":1700000000,'
    '"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"tick "},"finish_reason":null}]}\n\n'
)
LAST = (
    'data: {"id":"chatcmpl-drip","object":"chat.completion.chunk","created":1700000000,'
    '"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    'data: {"id":"chatcmpl-drip","object":"chat.completion.chunk","created":1700000000,'
    '"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}\n\n'
    "data: [DONE]\n\n"
)


def _chunk(text):
    data = text.encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _drip_handler(reader, writer, interval, count):
    try:
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await asyncio.wait_for(reader.readexactly(length), 30)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(count):
                writer.write(_chunk(CHUNK))
                await writer.drain()
                await asyncio.sleep(interval)
            writer.write(_chunk(LAST) + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _drip_main(port, interval, count, lifetime):
    server = await asyncio.start_server(
        lambda r, w: _drip_handler(r, w, interval, count), "127.0.0.1", port, backlog=4096
    )
    print(f"drip upstream listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await asyncio.sleep(lifetime)  # stops by itself


# --- N concurrent open streams ----------------------------------------------------------------


async def _open_one(host, port, ctx, request, first_seen, sem, stop):
    try:
        async with sem:  # bounded concurrent handshakes
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), 30)
        writer.write(request)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 60)
        if b" 200 " not in status:
            writer.close()
            return "status " + status.decode(errors="replace").strip()
        while True:
            line = await asyncio.wait_for(reader.readline(), 60)
            if not line:
                writer.close()
                return "closed before the first chunk"
            if b"data:" in line:
                break
        first_seen()
        # hold the stream open, draining what the upstream drips, until told to stop
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(reader.read(4096), 1)
            except asyncio.TimeoutError:
                continue
            if not data:
                break
        writer.close()
        return None
    except Exception as e:  # noqa: BLE001 — reported, not raised
        return type(e).__name__


async def _open_streams_main(a):
    u = urllib.parse.urlsplit(a.url)
    ctx = None
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=a.cafile)
        ctx.check_hostname = False
    headers = {"Host": f"{u.hostname}:{u.port}", "Content-Type": "application/json"}
    for h in a.header:
        k, _, v = h.partition(":")
        headers[k.strip()] = v.strip()
    body = a.body.encode()
    headers["Content-Length"] = str(len(body))
    request = (f"POST {u.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    request += body

    opened = 0
    peak = {"rss": 0}

    def first_seen():
        nonlocal opened
        opened += 1

    stop = asyncio.Event()
    sem = asyncio.Semaphore(a.handshakes)
    idle = rss_kb(a.pid)
    t0 = time.monotonic()
    tasks = [asyncio.create_task(_open_one(u.hostname, u.port, ctx, request, first_seen, sem, stop)) for _ in range(a.n)]
    samples = []
    # wait until every stream has its first chunk (or failed), bounded
    while time.monotonic() - t0 < a.ramp_timeout:
        await asyncio.sleep(0.5)
        r = rss_kb(a.pid)
        peak["rss"] = max(peak["rss"], r)
        if opened + sum(1 for t in tasks if t.done()) >= a.n:
            break
    ramp = time.monotonic() - t0
    all_open = opened
    end = time.monotonic() + a.hold
    while time.monotonic() < end:
        r = rss_kb(a.pid)
        samples.append(r)
        peak["rss"] = max(peak["rss"], r)
        await asyncio.sleep(1)
    stop.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    errors = {}
    for r in results:
        if r is not None:
            errors[r] = errors.get(r, 0) + 1
    await asyncio.sleep(2)
    print(
        json.dumps(
            {
                "streams": a.n,
                "open": all_open,
                "ramp_s": round(ramp, 1),
                "rss_before_kb": idle,
                "rss_open_max_kb": max(samples) if samples else None,
                "rss_peak_kb": peak["rss"],
                "rss_after_kb": rss_kb(a.pid),
                "errors": errors,
            }
        ),
        flush=True,
    )


# --- the report -------------------------------------------------------------------------------

LABELS = {
    "direct": "direct (upstream nginx, HTTP)",
    "nginx": "nginx TLS 1.3 proxy (floor)",
    "swift": "Swift floor (bare SwiftNIO TLS proxy)",
    "litellm": "LiteLLM",
    "gatehouse": "Gatehouse",
}


def _read_tsv(path):
    try:
        with open(path) as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except OSError:
        return []


def _us(v):
    if v is None:
        return "—"
    if abs(v) >= 10000:
        return f"{v / 1000:.1f} ms"
    return f"{v:.0f} µs"


def _mib(kb):
    return "—" if not kb else f"{kb / 1024:.1f} MiB"


def _ratio(a, b):
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _fx(r):
    return "n/a" if r is None else (f"{r:.2f}×" if r < 10 else f"{r:.0f}×")


def report(d, out):
    meta = {}
    with open(f"{d}/meta.txt") as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    targets = meta["targets"].split()
    conns = [int(c) for c in meta["connections"].split()]
    lo, hi = min(conns), max(conns)

    runs = _read_tsv(f"{d}/runs.tsv")
    agg = {}  # (conns, target) -> dict of medians across rounds
    for c in conns:
        for t in targets:
            rows = [r for r in runs if int(r[0]) == c and r[2] == t and int(r[6]) >= 0]
            if not rows:
                continue
            agg[(c, t)] = {
                "p50": statistics.median(int(r[3]) for r in rows),
                "p99": statistics.median(int(r[4]) for r in rows),
                "rps": statistics.median(float(r[5]) for r in rows),
                "errors": sum(int(r[6]) for r in rows),
                "failed": sum(1 for r in runs if int(r[0]) == c and r[2] == t and int(r[6]) < 0),
            }

    def added(c, t, k):
        a, b = agg.get((c, t)), agg.get((c, "direct"))
        return None if a is None or b is None else a[k] - b[k]

    def get(c, t, k):
        a = agg.get((c, t))
        return None if a is None else a[k]

    ttfb = {}
    try:
        with open(f"{d}/ttfb.jsonl") as f:
            for line in f:
                if line.strip():
                    o = json.loads(line)
                    ttfb[o["name"]] = o
    except OSError:
        pass
    rss = {r[0]: (int(r[1]), int(r[2])) for r in _read_tsv(f"{d}/rss.tsv")}
    rss_after = {r[0]: int(r[1]) for r in _read_tsv(f"{d}/rss-after.tsv")}

    def ttfb_added(t, key="p50_us"):
        """Target − direct for one of the TTFB medians: `p50_us` (http.client),
        `first_byte_p50_us` or `first_event_p50_us` (raw socket client)."""
        a, b = ttfb.get(t, {}).get(key), ttfb.get("direct", {}).get(key)
        return None if a is None or b is None else a - b

    def first_byte_added(t):
        return ttfb_added(t, "first_byte_p50_us")

    def first_event_added(t):
        return ttfb_added(t, "first_event_p50_us")

    # the table
    head = ["target"]
    for c in conns:
        head += [f"added p50 @{c}", f"added p99 @{c}", f"req/s @{c}"]
    head += ["stream TTFB p50 (wire)", "added TTFB (wire)", "added TTFB (http.client)", "RSS idle", "RSS load", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for t in targets:
        row = [LABELS.get(t, t)]
        for c in conns:
            if t == "direct":
                row += [f"({_us(get(c, t, 'p50'))})", f"({_us(get(c, t, 'p99'))})"]
            else:
                row += [_us(added(c, t, "p50")), _us(added(c, t, "p99"))]
            r = get(c, t, "rps")
            row.append("—" if r is None else f"{r:.0f}")
        row.append(_us(ttfb.get(t, {}).get("first_event_p50_us")))
        row.append("—" if t == "direct" else _us(first_event_added(t)))
        row.append("—" if t == "direct" else _us(ttfb_added(t)))
        idle, load = rss.get(t, (0, 0))
        row += [_mib(idle), _mib(load)]
        errs = (sum(get(c, t, "errors") or 0 for c in conns) + ttfb.get(t, {}).get("errors", 0)
                + ttfb.get(t, {}).get("first_byte_errors", 0))
        failed = sum(get(c, t, "failed") or 0 for c in conns)
        row.append(str(errs) + (f" ({failed} wrk runs failed)" if failed else ""))
        lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines)

    # ratios and targets
    have = set(targets)
    ll_note = "LiteLLM missing, see below" if meta.get("litellm_missing") else "LiteLLM not run"
    g50 = added(lo, "gatehouse", "p50")
    n50 = added(lo, "nginx", "p50")
    ratios = []
    checks = []  # (target, measured, result)

    def check(name, value, ok, why_missing=None):
        if value is None:
            checks.append((name, "n/a" + (f" ({why_missing})" if why_missing else ""), "—"))
        else:
            checks.append((name, value, "PASS" if ok else "FAIL"))

    if "nginx" in have and "gatehouse" in have:
        r1 = _ratio(g50, n50)
        r2 = _ratio(get(hi, "gatehouse", "rps"), get(hi, "nginx", "rps"))
        ratios.append(f"- Gatehouse / nginx, added p50 at {lo} connection(s): {_fx(r1)} ({_us(g50)} vs {_us(n50)})")
        ratios.append(f"- Gatehouse / nginx, req/s at {hi} connections: {_fx(r2)}")
        check(f"added p50 at {lo} conn ≤ 1.3× nginx's", None if r1 is None else f"{_fx(r1)} ({_us(g50)} vs {_us(n50)})",
              r1 is not None and r1 <= 1.3, "nginx added p50 ≤ 0" if r1 is None and g50 is not None else None)
        check(f"req/s at {hi} conns ≥ 0.5× nginx's", None if r2 is None else _fx(r2), r2 is not None and r2 >= 0.5)
    else:
        check(f"added p50 at {lo} conn ≤ 1.3× nginx's", None, False, "nginx not run")
        check(f"req/s at {hi} conns ≥ 0.5× nginx's", None, False, "nginx not run")
    if "swift" in have:
        # The least the packages Gatehouse is built on cost as a proxy (Benchmarks/Floor): how much
        # of the gap to nginx is the stack, and how much Gatehouse adds on top of it.
        s50 = added(lo, "swift", "p50")
        if "nginx" in have:
            ratios.append(f"- Swift floor / nginx, added p50 at {lo} connection(s): {_fx(_ratio(s50, n50))} "
                          f"({_us(s50)} vs {_us(n50)}); req/s at {hi}: {_fx(_ratio(get(hi, 'swift', 'rps'), get(hi, 'nginx', 'rps')))}")
        if "gatehouse" in have:
            ratios.append(f"- Gatehouse / Swift floor, added p50 at {lo} connection(s): {_fx(_ratio(g50, s50))} "
                          f"({_us(g50)} vs {_us(s50)}); req/s at {hi}: {_fx(_ratio(get(hi, 'gatehouse', 'rps'), get(hi, 'swift', 'rps')))}")
        st, gt, nt = ttfb_added("swift"), ttfb_added("gatehouse"), ttfb_added("nginx")
        ratios.append(f"- Added streaming TTFB to the first event on the wire (raw socket client): nginx "
                      f"{_us(first_event_added('nginx'))}, Swift floor {_us(first_event_added('swift'))}, Gatehouse "
                      f"{_us(first_event_added('gatehouse'))}; to its first byte: nginx {_us(first_byte_added('nginx'))}, "
                      f"Swift floor {_us(first_byte_added('swift'))}, Gatehouse {_us(first_byte_added('gatehouse'))}; "
                      f"through http.client: nginx {_us(nt)}, Swift floor {_us(st)}, Gatehouse {_us(gt)}")
    if "litellm" in have and "gatehouse" in have:
        r3 = _ratio(get(hi, "gatehouse", "rps"), get(hi, "litellm", "rps"))
        g99, l99 = added(hi, "gatehouse", "p99"), added(hi, "litellm", "p99")
        r4 = _ratio(g99, l99)
        r5 = _ratio(get(lo, "gatehouse", "rps"), get(lo, "litellm", "rps"))
        ratios.append(f"- Gatehouse / LiteLLM, req/s at {hi} connections: {_fx(r3)} (at {lo}: {_fx(r5)})")
        ratios.append(f"- Gatehouse / LiteLLM, added p99 at {hi} connections: {_fx(r4)} ({_us(g99)} vs {_us(l99)})")
        check(f"req/s at {hi} conns ≥ 20× LiteLLM's", None if r3 is None else _fx(r3), r3 is not None and r3 >= 20)
        check(f"added p99 at {hi} conns ≤ 1/10 of LiteLLM's", None if r4 is None else f"{_fx(r4)} ({_us(g99)} vs {_us(l99)})",
              r4 is not None and r4 <= 0.1)
    else:
        check(f"req/s at {hi} conns ≥ 20× LiteLLM's", None, False, ll_note)
        check(f"added p99 at {hi} conns ≤ 1/10 of LiteLLM's", None, False, ll_note)
    ea = first_event_added("gatehouse")
    ta = ttfb_added("gatehouse")
    check("streaming TTFB added ≤ 200 µs (first event on the wire)",
          None if ea is None else _us(ea) + ("" if ta is None else f" (through http.client: {_us(ta)})"),
          ea is not None and ea <= 200)
    idle = rss.get("gatehouse", (0, 0))[0]
    check("RSS idle ≤ 64 MiB", _mib(idle) if idle else None, idle and idle <= 64 * 1024)
    streams = None
    try:
        with open(f"{d}/streams.json") as f:
            text = f.read().strip()
            streams = json.loads(text) if text else None
    except (OSError, ValueError):
        pass
    if streams:
        peak = streams.get("rss_peak_kb") or 0
        ok = peak <= 256 * 1024 and streams["open"] == streams["streams"]
        check(f"RSS with {streams['streams']} open streams ≤ 256 MiB",
              f"{_mib(peak)}, {streams['open']}/{streams['streams']} streams open", ok)
    elif int(meta.get("open_streams", "0")) > 0:
        check("RSS with open streams ≤ 256 MiB", None, False, "the measurement failed")
    else:
        check("RSS with 1000 open streams ≤ 256 MiB", None, False, "skipped: OPEN_STREAMS=0")

    targets_table = "| issue target | measured | result |\n|---|---|---|\n" + "\n".join(
        f"| {a} | {b} | {c} |" for a, b, c in checks)

    soak_rows = _read_tsv(f"{d}/soak.tsv")
    soak_text = ""
    if soak_rows:
        samples = [(r[0], int(r[1])) for r in soak_rows]
        timed = [(int(t), v) for t, v in samples if t != "end"]
        wrk_line = ""
        try:
            with open(f"{d}/soak-wrk.txt") as f:
                m = [l for l in f if l.startswith("RESULT ")]
                if m:
                    p50, p99, rps, errs, total = m[-1].split()[1:6]
                    wrk_line = f"{total} requests, {float(rps):.0f} req/s, p50 {p50} µs, p99 {p99} µs, {errs} errors"
        except OSError:
            pass
        first_loaded = timed[1][1] if len(timed) > 1 else timed[0][1]
        last = timed[-1][1]
        mid = [v for t, v in timed if t >= timed[-1][0] / 2]
        soak_text = (
            f"Soak: {meta['soak']} s at {meta['soak_connections']} connections on Gatehouse, plain and streamed "
            f"requests alternately: {wrk_line or 'no wrk summary'}.\n"
            f"RSS before {_mib(timed[0][1])}, after 10 s {_mib(first_loaded)}, at the end of the load {_mib(last)}, "
            f"max {_mib(max(v for _, v in timed))}; growth from 10 s to the end {(last - first_loaded) / 1024:+.1f} MiB, "
            f"over the second half {(last - mid[0]) / 1024:+.1f} MiB"
            + (f"; 2 s after the load {_mib(samples[-1][1])}" if samples[-1][0] == "end" else "") + ".\n"
        )

    summary = f"{table}\n\n" + "\n".join(ratios) + f"\n\n{targets_table}\n"
    notes = []
    if meta.get("litellm_missing"):
        notes.append(f"LiteLLM is missing from this run: {meta['litellm_missing']}")
    if streams:
        notes.append(
            f"{streams['streams']} concurrent streams (drip upstream, one chunk a second): {streams['open']} got their first "
            f"chunk within {streams['ramp_s']} s; Gatehouse RSS before {_mib(streams['rss_before_kb'])}, while open "
            f"{_mib(streams['rss_open_max_kb'])} (peak {_mib(streams['rss_peak_kb'])}), after {_mib(streams['rss_after_kb'])}; "
            f"errors {streams['errors'] or 0}.")
    if soak_text:
        notes.append(soak_text.strip())
    dropped = meta.get("log_dropped", "")
    notes.append("Request-log entries dropped by Gatehouse (queue full) over the whole run: "
                 + (f"at least {dropped} (from its warnings)" if dropped else "none"))
    print(summary + ("\n" + "\n".join(notes) + "\n" if notes else ""))

    with open(out, "w") as f:
        f.write(f"# Gatehouse vs nginx and LiteLLM — {meta['started']}\n\n")
        described = []
        if "nginx" in targets:
            described.append(f"nginx as a TLS 1.3 reverse proxy (keep-alive to the upstream, {meta['proxy_workers']} workers)")
        if "swift" in targets:
            described.append("the Swift floor: a bare SwiftNIO + NIOSSL + NIOHTTP1 TLS 1.3 proxy (`Benchmarks/Floor`, release, "
                             "same certificate, one kept-alive upstream connection per client connection, no gateway work)")
        if "litellm" in targets:
            described.append(
                f"LiteLLM {meta['litellm']} (master key, no database, no callbacks, {meta['litellm_workers']} workers, "
                f"{'HTTPS' if meta['litellm_tls'] == '1' else 'plain HTTP'})")
        if "gatehouse" in targets:
            described.append("Gatehouse (release build, HTTPS, proxy key with a rate limit and a budget, request logging on)")
        f.write(
            "wrk POSTing a small chat body (`max_tokens` 8) to a static nginx upstream directly (plain HTTP) and through "
            f"each target: {'; '.join(described)}. {meta['warmup']} s warm-up + {meta['duration']} s per run, "
            f"{meta['rounds']} interleaved rounds per target and connection count, median of the rounds; 1 connection "
            "uses 1 wrk thread, more use 2. \"Added\" = target − direct (medians). Streaming TTFB: time from sending a "
            f"`stream: true` request to the first `data:` line, {meta['rounds']} × {meta['ttfb_n']} sequential requests "
            "per target on a keep-alive connection (20 warm-up requests per round), median. \"(wire)\": from a raw "
            "socket client, to the read that completes the head and the first `data:` of the body (the PASS/FAIL "
            "uses this); \"(http.client)\": the same requests through Python's `http.client`, its parsing of the "
            "head and of the chunked framing included (see Benchmarks/README.md). RSS: VmRSS summed over the "
            "process tree (idle = after start-up and one request each way; load = the largest sample, every 0.5 s, "
            "during the measured runs). Direct's own p50/p99 are in parentheses.\n\n")
        f.write(summary)
        if notes:
            f.write("\n" + "\n\n".join(notes) + "\n")
        f.write("\n## Machine\n\n")
        f.write(f"- CPUs: {meta['nproc']} ({meta['cpu']}); memory {meta['memory']}; load average at the end {meta['loadavg']}\n")
        f.write(f"- Kernel: {meta['kernel']}; {meta['os']}\n")
        f.write(f"- {meta['swift']}\n")
        f.write(f"- Gatehouse: commit {meta['commit']}; binary {meta['binary']}\n")
        f.write(f"- {meta['nginx']}; {meta['openssl']}; {meta['wrk']}; {meta['python']}; "
                f"LiteLLM {meta['litellm'] or 'not run'}\n")
        f.write(f"- Whole run: {meta['elapsed']} s after the build\n")
        f.write("\n## Every run\n\n| connections | round | target | p50 µs | p99 µs | req/s | errors |\n|---:|---:|---|---:|---:|---:|---:|\n")
        for r in runs:
            f.write("| " + " | ".join(r) + " |\n")
        f.write("\n### Streaming TTFB\n\n| target | requests | errors | http.client p50 µs | p90 µs | p99 µs | median per round µs "
                "| first byte p50 µs (raw) | per round µs (raw) | first event p50 µs (raw) | per round µs (raw) | raw errors |\n"
                "|---|---:|---:|---:|---:|---:|---|---:|---|---:|---|---:|\n")
        for t in targets:
            o = ttfb.get(t)
            if o:
                f.write(f"| {t} | {o['count']} | {o['errors']} | {o.get('p50_us', '—')} | {o.get('p90_us', '—')} | "
                        f"{o.get('p99_us', '—')} | {', '.join(map(str, o['round_medians_us']))} | "
                        f"{o.get('first_byte_p50_us', '—')} | {', '.join(map(str, o.get('first_byte_round_medians_us', [])))} | "
                        f"{o.get('first_event_p50_us', '—')} | {', '.join(map(str, o.get('first_event_round_medians_us', [])))} | "
                        f"{o.get('first_byte_errors', 0)} |\n")
        f.write("\n### Memory (VmRSS of the process tree)\n\n| target | idle | peak under load | at the end |\n|---|---:|---:|---:|\n")
        for t in targets:
            if t in rss:
                f.write(f"| {t} | {_mib(rss[t][0])} | {_mib(rss[t][1])} | {_mib(rss_after.get(t))} |\n")
        if streams:
            f.write(f"\n### Open streams\n\n```json\n{json.dumps(streams, indent=1)}\n```\n")
        if soak_rows:
            f.write("\n### Soak: Gatehouse RSS every 10 s\n\n| seconds | RSS |\n|---:|---:|\n")
            for t, v in soak_rows:
                f.write(f"| {t} | {_mib(int(v))} |\n")
        f.write(f"\nwrk, the upstream, the proxies and Python share the same {meta['nproc']} cores, so the rows at many "
                "connections measure contention as much as each proxy.\n")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ttfb")
    s.add_argument("config")
    s = sub.add_parser("drip-upstream")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--interval", type=float, default=1.0)
    s.add_argument("--chunks", type=int, default=60)
    s.add_argument("--lifetime", type=float, default=600)
    s = sub.add_parser("open-streams")
    s.add_argument("--url", required=True)
    s.add_argument("--cafile")
    s.add_argument("--header", action="append", default=[])
    s.add_argument("--body", required=True)
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--pid", type=int, required=True, help="process whose tree RSS is sampled")
    s.add_argument("--hold", type=float, default=10)
    s.add_argument("--ramp-timeout", type=float, default=60)
    s.add_argument("--handshakes", type=int, default=64)
    s = sub.add_parser("report")
    s.add_argument("--dir", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("rss")
    s.add_argument("pid", type=int)
    a = p.parse_args()
    if a.cmd == "ttfb":
        ttfb(a.config)
    elif a.cmd == "drip-upstream":
        asyncio.run(_drip_main(a.port, a.interval, a.chunks, a.lifetime))
    elif a.cmd == "open-streams":
        asyncio.run(_open_streams_main(a))
    elif a.cmd == "report":
        report(a.dir, a.out)
    elif a.cmd == "rss":
        print(rss_kb(a.pid))


if __name__ == "__main__":
    sys.exit(main())
