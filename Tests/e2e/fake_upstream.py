"""A fake LLM provider (OpenAI and Anthropic dialects) for the gateway end-to-end tests.

Stdlib only: a ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive, on 127.0.0.1 and an
ephemeral port, run in a background thread. Streaming responses are sent with hand-written
chunked transfer encoding and flushed event by event.

Every request is recorded (method, path, query, headers, body) with two facts the tests
check: the provider credential it carried (``Authorization: Bearer …`` for OpenAI paths,
``x-api-key`` for Anthropic paths) and whether the substring ``gate_`` (any Gatehouse key)
appeared anywhere in the request line, the headers or the body. Such a leak, or a missing
provider credential, is also recorded in ``violations`` and answered with a 400 so that it
cannot go unnoticed.

Behaviour by model name (the ``model`` field of the JSON body):

- ``slow-model``: streams its first chunk at once, then pauses ``SLOW_DELAY`` seconds before
  each further write (``SLOW_WRITES`` writes in all).
- ``error-model``: 429 with a provider-shaped error body (``ERROR_BODIES``).
- ``bad-request-model``: 400 with a provider-shaped error body.
- ``redirect-<code>`` (``redirect-302``, ``redirect-307``, …) on ``/v1/chat/completions``:
  answers ``<code>`` with ``Location: redirect_location`` (settable per instance, e.g. to a
  second ``FakeUpstream`` used as a canary; default: ``/v1/redirect-target`` on this one).
- ``echo-key-model``: 401 whose JSON body quotes the credential it received, whole (a hostile
  or careless provider); the gateway must not pass the provider key on to its client.
- ``head-delay-model``: waits ``HEAD_DELAY`` seconds before answering at all (a provider that
  thinks long before its first byte).
- ``drop-model`` (streamed): sends the response head and the first event, then closes the
  connection without ending the stream.
- ``close-model``: a normal answer with ``Connection: close``, then the connection is closed.
- anything else: a normal answer; the response's ``model`` echoes the requested one.

Other paths: ``GET /v1/models``; ``GET|POST /v1/redirect`` answers ``302`` to
``/v1/redirect-target``, whose body is ``REDIRECT_TARGET_BODY`` (it must never be reached
through the gateway).

``connections`` counts the TCP connections accepted (a canary must see none at all).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import ssl
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

# Usage numbers the fake reports, so tests can assert exact values.
OPENAI_PROMPT_TOKENS = 13
OPENAI_COMPLETION_TOKENS = 7
OPENAI_CACHED_TOKENS = 4
EMBEDDING_TOKENS_PER_INPUT = 5
ANTHROPIC_INPUT_TOKENS = 21
ANTHROPIC_OUTPUT_TOKENS = 9
ANTHROPIC_CACHE_READ_TOKENS = 5
ANTHROPIC_CACHE_CREATION_TOKENS = 3

OPENAI_TEXT = "Hello from the fake OpenAI upstream."
OPENAI_STREAM_PIECES = ["Hello", " from", " the", " fake", " stream."]
ANTHROPIC_TEXT = "Hello from the fake Anthropic upstream."
ANTHROPIC_STREAM_PIECES = ["Hello", " from", " fake", " Claude."]
SLOW_PIECES = ["slow", " stream", " done"]
TOOL_ARGUMENTS = '{"location": "Paris"}'
TOOL_ARGUMENT_PIECES = ['{"location":', ' "Paris"}']
TOOL_CALL_ID = "call_fake_0001"

SLOW_MODEL = "slow-model"
ERROR_MODEL = "error-model"
BAD_REQUEST_MODEL = "bad-request-model"
ECHO_KEY_MODEL = "echo-key-model"
SLOW_DELAY = 1.6  # seconds between writes of a slow stream
HEAD_DELAY_MODEL = "head-delay-model"
HEAD_DELAY = 2.0  # seconds before a head-delay-model answer starts
DROP_MODEL = "drop-model"
CLOSE_MODEL = "close-model"

REDIRECT_PATH = "/v1/redirect"
REDIRECT_TARGET_PATH = "/v1/redirect-target"
REDIRECT_TARGET_BODY = b'{"redirect_target": "REDIRECT-TARGET-BODY-must-not-be-seen"}'
REDIRECT_MODEL_PREFIX = "redirect-"  # + a 3xx status code

OPENAI_ERROR_BODY = {
    "error": {
        "message": "Rate limit reached for error-model in organization org-fake on requests per min (RPM): "
                   "Limit 3, Used 3, Requested 1.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
OPENAI_BAD_REQUEST_BODY = {
    "error": {
        "message": "Invalid value for 'temperature': must be between 0 and 2.",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "invalid_value",
    }
}
ANTHROPIC_ERROR_BODY = {
    "type": "error",
    "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your rate limit."},
}
ANTHROPIC_BAD_REQUEST_BODY = {
    "type": "error",
    "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
}
ERROR_REQUEST_ID = "req_fake_upstream_error"

GATE_MARKER = b"gate_"


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclasses.dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: list  # [(name, value)] as received
    body: bytes
    received_at: float
    credential: Optional[str] = None  # provider key as received, if any
    credential_header: Optional[str] = None  # "authorization" | "x-api-key"
    gate_leaks: list = dataclasses.field(default_factory=list)  # where "gate_" was seen

    @property
    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_names(self) -> set:
        return {k.lower() for k, _ in self.headers}

    @property
    def model(self) -> Optional[str]:
        j = self.json
        return j.get("model") if isinstance(j, dict) else None


class _Server(ThreadingHTTPServer):
    def verify_request(self, request, client_address) -> bool:
        with self.fake._lock:  # type: ignore[attr-defined]
            self.fake.connections += 1  # type: ignore[attr-defined]
        return True


class FakeUpstream:
    """The fake provider. ``with FakeUpstream() as up: up.base_url ...``."""

    def __init__(self, tls: Optional[tuple] = None) -> None:
        """`tls`: (certificate file, key file) to serve HTTPS as ``https://localhost:<port>``."""
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.connections = 0  # TCP connections accepted
        # Where ``redirect-<code>`` models point (None: /v1/redirect-target on this server).
        self.redirect_location: Optional[str] = None
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.tls = tls is not None
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self._thread: Optional[threading.Thread] = None
        # Writes that failed because the peer (the gateway) went away mid-stream.
        self.aborted_streams = 0

    # lifecycle --------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}" if self.tls else f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeUpstream":
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-upstream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> "FakeUpstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # recording ----------------------------------------------------------------------------
    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(req)
            for leak in req.gate_leaks:
                self.violations.append(f"{req.method} {req.path}: 'gate_' found in {leak}")

    def _violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    def since(self, n: int) -> list[RecordedRequest]:
        """The requests recorded after the first `n` (use with ``count()``)."""
        with self._lock:
            return list(self._requests[n:])

    def last(self) -> RecordedRequest:
        with self._lock:
            assert self._requests, "the fake upstream received no request"
            return self._requests[-1]

    def find(self, pred: Callable[[RecordedRequest], bool]) -> list[RecordedRequest]:
        return [r for r in self.requests if pred(r)]

    def credentials(self) -> set:
        return {r.credential for r in self.requests}

    def gate_leaks(self) -> list[str]:
        return [f"{r.method} {r.path}: {leak}" for r in self.requests for leak in r.gate_leaks]


class _ClientGone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeProvider/1.0"

    # quiet
    def log_message(self, format, *args) -> None:  # noqa: A002
        pass

    @property
    def fake(self) -> FakeUpstream:
        return self.server.fake  # type: ignore[attr-defined]

    # request reading -----------------------------------------------------------------------
    def _read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until the empty line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                out += self.rfile.read(size)
                self.rfile.readline(65537)  # CRLF after the chunk
            return bytes(out)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _capture(self) -> RecordedRequest:
        body = self._read_body()
        parsed = urllib.parse.urlsplit(self.path)
        headers = list(self.headers.items())
        rec = RecordedRequest(
            method=self.command, path=parsed.path, query=parsed.query, headers=headers, body=body,
            received_at=time.monotonic(),
        )
        # Where does "gate_" appear? (case-insensitive, so an upper-cased copy is caught too)
        if GATE_MARKER in self.requestline.encode("latin-1", "replace").lower():
            rec.gate_leaks.append("the request line")
        for k, v in headers:
            if GATE_MARKER in f"{k}: {v}".encode("latin-1", "replace").lower():
                rec.gate_leaks.append(f"header {k}")
        if GATE_MARKER in body.lower():
            rec.gate_leaks.append("the body")
        # The provider credential.
        if rec.path.startswith("/v1/messages"):
            rec.credential_header = "x-api-key"
            rec.credential = rec.header("x-api-key")
        else:
            rec.credential_header = "authorization"
            auth = rec.header("authorization") or ""
            rec.credential = auth[7:] if auth[:7].lower() == "bearer " else None
        self.fake._record(rec)
        return rec

    # response writing ----------------------------------------------------------------------
    def _send_bytes(self, status: int, body: bytes, content_type: str = "application/json",
                    extra: Optional[dict] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, obj, extra: Optional[dict] = None) -> None:
        self._send_bytes(status, _dumps(obj), extra=extra)

    def _start_stream(self, extra: Optional[dict] = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        if not data:
            return
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
            raise _ClientGone() from e

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
            raise _ClientGone() from e

    def _stream_writes(self, writes: list[bytes], slow: bool) -> None:
        """Sends each element of `writes` as one chunk (slow: pausing before all but the first)."""
        self._start_stream()
        for i, data in enumerate(writes):
            if slow and i > 0:
                time.sleep(SLOW_DELAY)
            self._chunk(data)
        self._end_stream()

    # dispatch -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            rec = self._capture()
        except Exception as e:  # malformed request: answer and close
            self.fake._violation(f"fake upstream could not read a request: {e!r}")
            self.close_connection = True
            self._send_json(400, {"error": {"message": "fake upstream: unreadable request", "type": "fake"}})
            return
        try:
            if rec.gate_leaks:
                self._send_json(400, {"error": {"message": "fake upstream: a Gatehouse key reached the provider",
                                                "type": "gatehouse_key_leak", "code": "gate_leak"}})
                return
            if rec.path.startswith("/v1/") and rec.path not in (REDIRECT_PATH, REDIRECT_TARGET_PATH) \
                    and not rec.credential:
                self.fake._violation(f"{rec.method} {rec.path}: no provider credential ({rec.credential_header})")
                self._send_json(401, {"error": {"message": "fake upstream: no provider credential",
                                                "type": "invalid_request_error", "code": "invalid_api_key"}})
                return
            self._route(rec)
        except _ClientGone:
            self.fake.aborted_streams += 1
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.fake.aborted_streams += 1
            self.close_connection = True

    def _route(self, rec: RecordedRequest) -> None:
        p, m = rec.path, rec.method
        if p == REDIRECT_PATH:
            self._send_bytes(302, b"", extra={"Location": f"http://127.0.0.1:{self.fake.port}{REDIRECT_TARGET_PATH}"})
        elif p == REDIRECT_TARGET_PATH:
            self._send_bytes(200, REDIRECT_TARGET_BODY)
        elif p == "/v1/models" and m == "GET":
            self._models()
        elif p == "/v1/chat/completions" and m == "POST":
            self._chat(rec)
        elif p == "/v1/embeddings" and m == "POST":
            self._embeddings(rec)
        elif p == "/v1/messages" and m == "POST":
            self._messages(rec)
        else:
            self._send_json(404, {"error": {"message": f"Unknown request URL: {m} {p}.", "type": "invalid_request_error",
                                            "param": None, "code": "unknown_url"}})

    # OpenAI ---------------------------------------------------------------------------------
    def _models(self) -> None:
        now = int(time.time())
        ids = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", SLOW_MODEL, ERROR_MODEL]
        self._send_json(200, {"object": "list",
                              "data": [{"id": i, "object": "model", "created": now, "owned_by": "fake"} for i in ids]})

    @staticmethod
    def _openai_usage() -> dict:
        return {
            "prompt_tokens": OPENAI_PROMPT_TOKENS,
            "completion_tokens": OPENAI_COMPLETION_TOKENS,
            "total_tokens": OPENAI_PROMPT_TOKENS + OPENAI_COMPLETION_TOKENS,
            "prompt_tokens_details": {"cached_tokens": OPENAI_CACHED_TOKENS, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }

    def _openai_error(self, model: str) -> bool:
        if model == ERROR_MODEL:
            self._send_json(429, OPENAI_ERROR_BODY, extra={"x-request-id": ERROR_REQUEST_ID, "retry-after": "20"})
            return True
        if model == BAD_REQUEST_MODEL:
            self._send_json(400, OPENAI_BAD_REQUEST_BODY, extra={"x-request-id": ERROR_REQUEST_ID})
            return True
        if model == ECHO_KEY_MODEL:
            auth = self.headers.get("Authorization", "")
            self._send_json(401, {"error": {"message": f"Incorrect API key provided: {auth}. Key: {auth[7:]}",
                                            "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
            return True
        return False

    def _chat(self, rec: RecordedRequest) -> None:
        body = rec.json
        if not isinstance(body, dict):
            self._send_json(400, {"error": {"message": "We could not parse the JSON body of your request.",
                                            "type": "invalid_request_error", "param": None, "code": None}})
            return
        model = str(body.get("model") or "")
        if self._openai_error(model):
            return
        if model == HEAD_DELAY_MODEL:
            time.sleep(HEAD_DELAY)
        if model == CLOSE_MODEL:
            self.close_connection = True
            self._send_json(200, {"id": "chatcmpl-close", "object": "chat.completion", "created": int(time.time()),
                                  "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": OPENAI_TEXT}}],
                                  "usage": self._openai_usage()}, extra={"Connection": "close"})
            return
        if model == DROP_MODEL:
            self._start_stream()
            self._chunk(b'data: {"id":"chatcmpl-drop","object":"chat.completion.chunk","choices":[]}\n\n')
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if model.startswith(REDIRECT_MODEL_PREFIX) and model[len(REDIRECT_MODEL_PREFIX):].isdigit():
            location = self.fake.redirect_location or f"http://127.0.0.1:{self.fake.port}{REDIRECT_TARGET_PATH}"
            self._send_json(int(model[len(REDIRECT_MODEL_PREFIX):]),
                            {"error": {"message": "moved", "type": "redirect"}}, extra={"Location": location})
            return
        tools = body.get("tools") or []
        tool_name = None
        if tools and isinstance(tools, list) and isinstance(tools[0], dict):
            tool_name = (tools[0].get("function") or {}).get("name") or "tool"
        created = int(time.time())
        cid = f"chatcmpl-fake{created}{threading.get_ident() % 100000}"
        if not body.get("stream"):
            if tool_name:
                message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                    {"id": TOOL_CALL_ID, "type": "function", "function": {"name": tool_name, "arguments": TOOL_ARGUMENTS}}
                ]}
                finish = "tool_calls"
            else:
                message = {"role": "assistant", "content": OPENAI_TEXT, "refusal": None}
                finish = "stop"
            self._send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": self._openai_usage(), "system_fingerprint": "fp_fake",
            }, extra={"x-request-id": "req_fake_chat"})
            return

        options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        include_usage = options.get("include_usage") is True

        def chunk(delta: dict, finish=None) -> dict:
            c = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                 "system_fingerprint": "fp_fake",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                c["usage"] = None
            return c

        events: list[dict] = []
        if tool_name:
            events.append(chunk({"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": TOOL_CALL_ID, "type": "function", "function": {"name": tool_name, "arguments": ""}}
            ]}))
            for piece in TOOL_ARGUMENT_PIECES:
                events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
            events.append(chunk({}, "tool_calls"))
        else:
            pieces = SLOW_PIECES if model == SLOW_MODEL else OPENAI_STREAM_PIECES
            events.append(chunk({"role": "assistant", "content": pieces[0], "refusal": None}))
            for piece in pieces[1:]:
                events.append(chunk({"content": piece}))
            events.append(chunk({}, "stop"))
        if include_usage:
            events.append({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                           "system_fingerprint": "fp_fake", "choices": [], "usage": self._openai_usage()})
        encoded = [b"data: " + _dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
        if model == SLOW_MODEL:
            # first content chunk at once, then one write per further piece; the tail (finish,
            # usage, [DONE]) goes with the last piece.
            n = len(SLOW_PIECES)
            writes = encoded[: n - 1] + [b"".join(encoded[n - 1:])]
            self._stream_writes(writes, slow=True)
        else:
            self._stream_writes(encoded, slow=False)

    def _embeddings(self, rec: RecordedRequest) -> None:
        body = rec.json
        if not isinstance(body, dict):
            self._send_json(400, {"error": {"message": "bad body", "type": "invalid_request_error"}})
            return
        model = str(body.get("model") or "")
        if self._openai_error(model):
            return
        inputs = body.get("input")
        if not isinstance(inputs, list) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        b64 = body.get("encoding_format") == "base64"
        data = []
        for i, _ in enumerate(inputs):
            vec = [0.125 * (i + 1), -0.5, 0.25, 1.0]
            emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n = EMBEDDING_TOKENS_PER_INPUT * len(inputs)
        self._send_json(200, {"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": n, "total_tokens": n}})

    # Anthropic ------------------------------------------------------------------------------
    def _messages(self, rec: RecordedRequest) -> None:
        body = rec.json
        if not isinstance(body, dict):
            self._send_json(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                             "message": "request body is not valid JSON"}})
            return
        model = str(body.get("model") or "")
        if model == ERROR_MODEL:
            self._send_json(429, ANTHROPIC_ERROR_BODY, extra={"request-id": ERROR_REQUEST_ID, "retry-after": "20"})
            return
        if model == BAD_REQUEST_MODEL:
            self._send_json(400, ANTHROPIC_BAD_REQUEST_BODY, extra={"request-id": ERROR_REQUEST_ID})
            return
        mid = f"msg_fake{int(time.time())}{threading.get_ident() % 100000}"
        usage_in = {
            "input_tokens": ANTHROPIC_INPUT_TOKENS,
            "cache_creation_input_tokens": ANTHROPIC_CACHE_CREATION_TOKENS,
            "cache_read_input_tokens": ANTHROPIC_CACHE_READ_TOKENS,
        }
        if not body.get("stream"):
            self._send_json(200, {
                "id": mid, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": ANTHROPIC_TEXT}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {**usage_in, "output_tokens": ANTHROPIC_OUTPUT_TOKENS},
            }, extra={"request-id": "req_fake_messages"})
            return

        def ev(name: str, data: dict) -> bytes:
            return f"event: {name}\n".encode() + b"data: " + _dumps(data) + b"\n\n"

        pieces = SLOW_PIECES if model == SLOW_MODEL else ANTHROPIC_STREAM_PIECES
        head = ev("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {**usage_in, "output_tokens": 1}}})
        head += ev("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})
        head += ev("ping", {"type": "ping"})
        deltas = [ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": p}}) for p in pieces]
        tail = ev("content_block_stop", {"type": "content_block_stop", "index": 0})
        tail += ev("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                     "usage": {"output_tokens": ANTHROPIC_OUTPUT_TOKENS}})
        tail += ev("message_stop", {"type": "message_stop"})
        if model == SLOW_MODEL:
            writes = [head + deltas[0]] + deltas[1:-1] + [deltas[-1] + tail]
            self._stream_writes(writes, slow=True)
        else:
            self._stream_writes([head] + deltas + [tail], slow=False)
