"""Exclusive instructions per request by library, from `callgrind_annotate --auto=no` output
on stdin (mangled symbols). Usage: callgrind_annotate ... | python3 by_library.py REQUESTS"""
import collections
import re
import sys

requests = int(sys.argv[1])
# Swift module prefixes of mangled symbols ($s + length + name), first match wins.
MODULES = [
    ("8NIOPosix", "SwiftNIO (NIOCore, NIOPosix)"), ("7NIOCore", "SwiftNIO (NIOCore, NIOPosix)"),
    ("8_NIOBase", "SwiftNIO (NIOCore, NIOPosix)"), ("16NIOConcurrencyHelpers", "SwiftNIO (NIOCore, NIOPosix)"),
    ("8NIOHTTP1", "NIOHTTP1 (HTTP/1 codecs)"), ("6NIOSSL", "NIOSSL (Swift side)"), ("6NIOTLS", "NIOSSL (Swift side)"),
    ("9HTTPTypes", "HTTPTypes + NIOHTTPTypes conversion"), ("12NIOHTTPTypes", "HTTPTypes + NIOHTTPTypes conversion"),
    ("17NIOHTTPTypesHTTP1", "HTTPTypes + NIOHTTPTypes conversion"),
    ("15HummingbirdCore", "Hummingbird"), ("11Hummingbird", "Hummingbird"),
    ("15GatehouseServer", "Gatehouse"), ("13GatehouseCore", "Gatehouse"), ("14GatehouseStore", "Gatehouse"),
    ("20FoundationEssentials", "Foundation"), ("10Foundation", "Foundation"), ("6Crypto", "swift-crypto (Swift side)"),
    ("7Logging", "swift-log"), ("s", "Swift standard library"), ("S", "Swift standard library"),
]

def bucket(symbol: str, where: str) -> str:
    if "BoringSSL" in symbol or "bssl::" in symbol or "aesni" in symbol or "gcm_" in symbol or "tls13" in symbol:
        return "BoringSSL (TLS records, AES-GCM, SHA-256)"
    if "llhttp" in symbol:
        return "llhttp (HTTP/1 parser, C)"
    if "libc.so" in where or "./malloc/" in where:
        return "libc (malloc/free, memcpy, syscall wrappers)"
    if "sqlite3" in symbol.lower() or symbol.startswith("wal") or symbol.startswith("pager"):
        return "SQLite"
    if symbol.startswith(("swift_", "swift::", "_swift", "__swift", "bool swift", "std::", "getCache", "tryCast")) or "swift::" in symbol:
        return "Swift runtime (ARC, exclusivity checks, casts, generic metadata)"
    if symbol.startswith("$s") or symbol.startswith("$S"):
        for prefix, name in MODULES:
            if symbol[2:].startswith(prefix):
                return name
    return "other"

totals = collections.Counter()
program = 0
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)", line)
    if not m:
        continue
    count, rest = int(m.group(1).replace(",", "")), m.group(2)
    if "PROGRAM TOTALS" in rest:
        program = count
        continue
    if program and count >= program * 0.99:  # thread entry points: inclusive, not exclusive
        continue
    symbol = rest.split(":", 1)[1] if ":" in rest else rest
    totals[bucket(symbol.split(" [")[0], rest)] += count
print("| library | instructions per request | share |")
print("|---|---:|---:|")
for name, count in totals.most_common():
    print(f"| {name} | {count / requests:,.0f} | {100 * count / program:.1f} % |")
