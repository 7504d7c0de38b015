#!/usr/bin/env bash
# Load test of `triage serve` (not run in CI; see docs/serve.md, "Load test").
#
# 1. Validates deploy/prometheus/alerts.yml with `promtool check rules` (Debian package
#    `prometheus`; skipped with a note if not installed).
# 2. Starts the release server in real time, and a real Prometheus scraping it every 2 s
#    with the alert rules loaded (if `prometheus` is installed).
# 3. Sends streamed requests at mixed priorities (HIGH 15 %, MEDIUM 35 %, LOW 50 % by
#    default), Poisson arrivals at RATE per second for DURATION seconds, past the engine's
#    capacity, then waits for every request in flight (scripts/serve-load.py). Fails if a
#    request got no complete answer, if the counters do not balance, or if HIGH's TTFT p99
#    as the scheduler measured it (cumulative, /admin/queue) is above HIGH's bound.
# 4. Halfway through, headless Chromium (Debian `chromium`, if installed) loads the
#    dashboard twice, 5 s apart: screenshots and DOM dumps, and checks that the queue
#    numbers changed between the two.
# 5. Asks Prometheus's query API for the server's series and rules.
# 6. Stops the server with SIGTERM and checks it exits 0.
#
# Outputs in target/serve-load/. Environment: SEED (7: the arrivals and prompts), RATE (13:
# about 1.5 times what the simulated A100 finishes with this mix), DURATION (60), PORT
# (18000), PROM_PORT (19090), CONFIG (a scheduler TOML for --config), SERVE_ARGS (more
# `triage serve` flags, e.g. "--max-num-batched-tokens 512"), TRIAGE_BIN (default
# target/release/triage, built).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-13}
DURATION=${DURATION:-60}
SEED=${SEED:-7}
PORT=${PORT:-18000}
PROM_PORT=${PROM_PORT:-19090}
config=()
if [[ -n "${CONFIG:-}" ]]; then config=(--config "$CONFIG"); fi
read -r -a serve_args <<< "${SERVE_ARGS:-}"
OUT=target/serve-load
mkdir -p "$OUT"
BIN=${TRIAGE_BIN:-target/release/triage}
if [[ -z "${TRIAGE_BIN:-}" ]]; then
    cargo build --release -q -p triage-cli
fi
VENV=target/serve-venv
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check httpx

echo "== promtool check rules"
if command -v promtool >/dev/null; then
    promtool check rules deploy/prometheus/alerts.yml
else
    echo "promtool not installed (apt-get install prometheus): alert rules not validated"
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "== triage serve on 127.0.0.1:$PORT"
"$BIN" serve --port "$PORT" --shutdown-grace 30s "${config[@]}" "${serve_args[@]}" \
    2> "$OUT/server.log" &
server=$!
pids+=("$server")
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { cat "$OUT/server.log"; exit 1; }

prom=""
if command -v prometheus >/dev/null; then
    cat > "$OUT/prometheus.yml" <<YML
global:
  scrape_interval: 2s
  evaluation_interval: 2s
rule_files:
  - $PWD/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: triage-serve
    static_configs:
      - targets: ["127.0.0.1:$PORT"]
YML
    rm -rf "$OUT/prom-data"
    prometheus --config.file="$OUT/prometheus.yml" --storage.tsdb.path="$OUT/prom-data" \
        --web.listen-address="127.0.0.1:$PROM_PORT" > "$OUT/prometheus.log" 2>&1 &
    prom=$!
    pids+=("$prom")
else
    echo "prometheus not installed (apt-get install prometheus): no scrape check"
fi

chrome=$(command -v chromium || command -v chromium-browser || true)
dashboard() {
    local n=$1
    "$chrome" --headless --no-sandbox --disable-gpu --virtual-time-budget=3000 \
        --window-size=1280,1100 --screenshot="$OUT/dashboard-$n.png" \
        "http://127.0.0.1:$PORT/" >/dev/null 2>&1 || true
    "$chrome" --headless --no-sandbox --disable-gpu --virtual-time-budget=3000 \
        --dump-dom "http://127.0.0.1:$PORT/" > "$OUT/dashboard-$n.html" 2>/dev/null || true
}
if [[ -n "$chrome" ]]; then
    ( sleep "$(( DURATION / 2 ))"; dashboard 1; sleep 5; dashboard 2 ) &
    shots=$!
else
    echo "chromium not installed (apt-get install chromium): no dashboard check"
fi

echo "== load: $RATE requests/s for $DURATION s"
status=0
"$VENV/bin/python" scripts/serve-load.py --url "http://127.0.0.1:$PORT" --rate "$RATE" \
    --duration "$DURATION" --seed "$SEED" --json "$OUT/summary.json" || status=$?
curl -sf "http://127.0.0.1:$PORT/admin/queue" > "$OUT/queue.json"
python3 -c "
import json, sys
q = json.load(open('$OUT/queue.json'))
c = q['conservation']
print('conservation:', c)
if not c['balanced']:
    sys.exit('FAIL: the scheduler counters do not balance')
failed = False
for k in q['classes']:
    for t in k['slo']:
        if t['window'] == 'cumulative' and t['measured_ms'] is not None:
            print(f\"scheduler: {k['name']:6} {t['target']} p{100 * t['quantile']:.0f} {t['measured_ms']:.0f} ms \"
                  f\"(bound {t['bound_ms']:.0f} ms), {100 * t['fraction_met']:.1f} % within, {t['samples']} samples\")
            if k['name'] == 'HIGH' and t['target'] == 'ttft' and not t['met']:
                failed = True
if failed:
    sys.exit('FAIL: HIGH TTFT p99 above its bound')
" || status=1

if [[ -n "$chrome" ]]; then
    wait "$shots" || true
    python3 - "$OUT" <<'PY'
import re, sys
out = sys.argv[1]
def queue(n):
    dom = open(f"{out}/dashboard-{n}.html").read()
    m = re.search(r'<tbody id="classes">(.*?)</tbody>', dom, re.S)
    return re.sub(r"<[^>]+>", " ", m.group(1)).split() if m else []
a, b = queue(1), queue(2)
print("dashboard 1:", " ".join(a))
print("dashboard 2:", " ".join(b))
if not a or not b:
    sys.exit("FAIL: the dashboard's queue table is empty in a DOM dump")
if a == b:
    sys.exit("FAIL: the dashboard's queue numbers did not change in 5 s")
print("dashboard: queue numbers changed; screenshots in", out)
PY
fi

if [[ -n "$prom" ]]; then
    sleep 3
    for q in triage_queue_depth vllm:num_requests_running triage_slo_compliance_ratio; do
        n=$(curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$q" \
            | python3 -c "import json,sys; print(len(json.load(sys.stdin)['data']['result']))")
        echo "prometheus: $q has $n series"
        [[ "$n" -gt 0 ]] || { echo "FAIL: prometheus has no $q"; status=1; }
    done
    curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/rules" \
        | python3 -c "import json,sys; g=json.load(sys.stdin)['data']['groups']; print('prometheus: rule groups', [x['name'] for x in g])"
    curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/alerts" \
        | python3 -c "import json,sys; a=json.load(sys.stdin)['data']['alerts']; print('prometheus: alerts', sorted({(x['labels']['alertname'], x['labels'].get('class', ''), x['state']) for x in a}))"
fi

echo "== SIGTERM"
kill -TERM "$server"
rc=0
wait "$server" || rc=$?
echo "server exited with $rc"; tail -2 "$OUT/server.log"
[[ $rc -eq 0 ]] || status=1
exit "$status"
