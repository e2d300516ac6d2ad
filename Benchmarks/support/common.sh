# Shared by Benchmarks/run and Benchmarks/instructions (sourced): helpers, the static upstream
# (a fixed chat.completion and a fixed SSE stream served by nginx), and the proxy keys.

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# wait_for SECONDS DESCRIPTION COMMAND... : polls COMMAND every 0.2 s
wait_for() {
    local limit=$1 what=$2 end=$((SECONDS + $1)); shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || { echo "timed out after ${limit}s waiting for $what" >&2; return 1; }
        sleep 0.2
    done
}

# gatehouse_binary : sets BIN to the Gatehouse binary to measure: $BIN if given, the existing
# static release build with SKIP_BUILD=1, else a fresh one (the caller defines `log` and `die`)
gatehouse_binary() {
    if [ -n "${BIN:-}" ]; then
        [ -x "$BIN" ] || die "BIN=$BIN is not an executable"
    elif [ "${SKIP_BUILD:-0}" = 1 ]; then
        BIN=.build-static/release/gatehouse
        [ -x "$BIN" ] || die "SKIP_BUILD=1 but $BIN does not exist"
    else
        log "swift build -c release --static-swift-stdlib --product gatehouse --scratch-path .build-static"
        swift build -c release --static-swift-stdlib --product gatehouse --scratch-path .build-static
        BIN=.build-static/release/gatehouse
    fi
}

# gatehouse_started DIR : once `gatehouse serve` (output in DIR/gatehouse.out and .err, data in
# DIR/data) says it listens: sets GH_PORT, GH, OWNER_KEY and CERT, or dies showing its output
gatehouse_started() {
    GH_PORT=$(sed -n 's|.*Gatehouse listening on https://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$1/gatehouse.out")
    OWNER_KEY=$(sed -n 's/^Owner API key (shown once): //p' "$1/gatehouse.out")
    [ -n "$GH_PORT" ] && [ -n "$OWNER_KEY" ] || { cat "$1/gatehouse.out" "$1/gatehouse.err" >&2; die "gatehouse did not start"; }
    GH="https://127.0.0.1:$GH_PORT"
    CERT="$1/data/tls/cert.pem"
}
# api PATH JSON : POST to Gatehouse's admin API as the owner (after gatehouse_started)
api() {
    curl -sSf --max-time "${API_MAX_TIME:-60}" --cacert "$CERT" -H "Authorization: Bearer $OWNER_KEY" \
        -H "Content-Type: application/json" -d "$2" "$GH$1"
}

# --- the static upstream ---------------------------------------------------------------------
CHAT_JSON='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}'
chunk() { printf 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini-2024-07-18","choices":[%s]%s}\\n\\n' "$1" "${2:-}"; }
SSE_BODY="$(chunk '{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}')$(chunk '{"index":0,"delta":{"content":"Hi"},"finish_reason":null}')$(chunk '{"index":0,"delta":{"content":"!"},"finish_reason":null}')$(chunk '{"index":0,"delta":{},"finish_reason":"stop"}')$(chunk '' ',"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}')data: [DONE]\n\n"

nginx_common() {  # PREFIX : directives shared by both nginx instances
    cat <<EOF
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() {
    cat <<EOF
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}
# write_upstream_conf DIR PORT : the static upstream's nginx.conf (1 worker) in DIR
write_upstream_conf() {
    mkdir -p "$1"
    cat >"$1/nginx.conf" <<EOF
worker_processes 1;
$(nginx_common "$1")
http {
$(nginx_http_common "$1")
    server {
        listen 127.0.0.1:$2;
        location = /v1/chat/completions {
            default_type application/json;
            return 200 '$CHAT_JSON';
        }
        location = /stream/v1/chat/completions {
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            # Framed as the providers frame a stream (Transfer-Encoding: chunked, no
            # Content-Length): a filter that rewrites nothing still drops the length.
            sub_filter_types text/event-stream;
            sub_filter 'chatcmpl-bench' 'chatcmpl-bench';
            return 200 '$SSE_BODY';
        }
    }
}
EOF
}

# proxy_key NAME BASE_URL : a provider key for BASE_URL and a proxy key on it with a rate limit
# and a budget (request logging is on by default), through `api`
proxy_key() {
    local id
    id=$(api /api/provider-keys "{\"name\":\"$1\",\"provider\":\"openai-compatible\",\"base_url\":\"$2\",\"api_key\":\"sk-bench-upstream\"}" | json_field id)
    api /api/proxy-keys "{\"name\":\"$1\",\"provider_key_id\":\"$id\",
        \"rate_limits\":[{\"metric\":\"requests\",\"limit\":1000000000,\"window_seconds\":60}],
        \"budget\":{\"limit_usd\":1000000,\"period\":\"month\"}}" | json_field key
}
