#!/usr/bin/env bash
# The main job, from a fresh machine: install what is missing, build the host
# and the example plugins, start `weir up --dev` (which starts a local
# nats-server with JetStream), and keep events flowing through it:
# orders into enrich-order, requests into echo, and now and then a bad order
# that lands in the dead-letter queue. Ctrl-C stops everything gracefully.
# Every 10 orders, and at the end, it prints what the host's /metrics says
# (127.0.0.1:9464, set in ./weir.toml). DEMO_SECONDS=N stops after N seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-plugins.sh
cargo build -p weir-host
weir=target/debug/weir
url=${WEIR_NATS_URL:-nats://127.0.0.1:4222}
export WEIR_NATS_URL=$url
# The webhook signing secret ./weir.toml's [http] reads (a demo value).
export WEIR_WEBHOOK_SECRET=${WEIR_WEBHOOK_SECRET:-whsec_$(head -c 24 /dev/urandom | base64)}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# ./weir.toml names the example plugins and the streams they use.
"$weir" up --dev --data-dir target/demo &
pids+=($!)

echo "demo: waiting for the host to answer on demo.echo.hello"
for _ in $(seq 1 600); do
  if "$weir" pub --request --timeout-ms 500 demo.echo.hello "hello, weir" 2>/dev/null; then break; fi
  sleep 0.5
done

"$weir" sub 'orders.enriched.>' &
pids+=($!)
"$weir" sub 'orders.large' &
pids+=($!)
"$weir" sub 'weir.dlq.>' &
pids+=($!)

# The host's own counts, from its /metrics endpoint (bash's /dev/tcp: no curl
# needed): events succeeded and dead-lettered per plugin and kind, consumer lag.
scrape() {
  local body
  exec 3<>/dev/tcp/127.0.0.1/9464 || return 0
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  body=$(cat <&3)
  exec 3<&-
  echo "demo: /metrics says:"
  grep -E '^weir_(events_(received|succeeded)_total|events_dead_lettered_total\{.*\} [1-9]|attempts_failed_total\{.*\} [1-9]|consumer_pending)' <<<"$body" |
    sed 's/^/  /' || true
}
trap 'scrape; exit 0' INT TERM

# One HTTP round trip: POST -> 202, poll the status, a signed webhook.
python3 scripts/demo-webhook.py http://127.0.0.1:8080 "$WEIR_WEBHOOK_SECRET"

start=$(date +%s)
n=0
while :; do
  n=$((n + 1))
  qty=$(( (n % 7) + 1 ))
  "$weir" pub -H "trace-id:demo-$n" "orders.created.eu" \
    "{\"id\":\"o-$n\",\"customer\":\"c-$((n % 3))\",\"items\":[{\"sku\":\"A\",\"qty\":$qty,\"unit_price\":49.5},{\"sku\":\"B\",\"qty\":1,\"unit_price\":12.0}]}"
  if (( n % 5 == 0 )); then
    "$weir" pub "orders.created.eu" "{\"id\":\"o-$n\",\"items\":[]}"   # rejected: no items
  fi
  "$weir" pub --request "demo.echo.$n" "echo $n"
  sleep 1
  if (( n % 10 == 0 )); then scrape; fi
  if [ -n "${DEMO_SECONDS:-}" ] && (( $(date +%s) - start >= DEMO_SECONDS )); then break; fi
done
scrape
