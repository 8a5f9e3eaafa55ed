#!/usr/bin/env bash
# End-to-end scrape test with a real Prometheus (the Debian binary, /usr/bin/prometheus):
#   - starts `meshgroup serve --demo` with its data dir, metrics endpoint and Reticulum interface on free
#     loopback ports in a temp dir;
#   - starts Prometheus on a free loopback port with a temp TSDB, scraping meshgroup every second under
#     job "meshgroup" and loading grafana/alerts/*.yaml;
#   - asserts through Prometheus' HTTP API that the target is up, meshgroup_groups_hosted >= 1,
#     store histograms were recorded, and every alerting rule evaluates without error.
# Prints "N passed, N failed"; exits non-zero on any failure. Every wait is bounded (WAIT_SECS, default 60).
#
# Environment: MESHGROUP_BIN (default: `cargo build` then target/debug/meshgroup),
#              PROMETHEUS_BIN (default: /usr/bin/prometheus), WAIT_SECS (default: 60).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

WAIT_SECS=${WAIT_SECS:-60}
PROMETHEUS_BIN=${PROMETHEUS_BIN:-/usr/bin/prometheus}
passed=0
failed=0
pids=()
tmp=$(mktemp -d)

cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do
        # Bounded: give each process 10 s to stop, then force it.
        for _ in $(seq 1 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { passed=$((passed + 1)); echo "PASS $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }

# A loopback TCP port nobody listens on (and that we have not handed out already).
taken=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        case "$taken" in *" $p "*) continue ;; esac
        if command -v ss >/dev/null 2>&1; then
            [ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] && continue
        elif (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            continue
        fi
        taken="$taken$p "
        echo "$p"
        return 0
    done
    echo "no free port found" >&2
    return 1
}

# wait_for DESCRIPTION COMMAND...: runs COMMAND every 0.5 s until it succeeds or WAIT_SECS pass.
wait_for() {
    local desc=$1
    shift
    local deadline=$((SECONDS + WAIT_SECS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if "$@"; then
            return 0
        fi
        sleep 0.5
    done
    echo "timed out after ${WAIT_SECS}s waiting for: $desc" >&2
    return 1
}

# prom_value QUERY: the value of the single sample an instant query returns (empty if none).
prom_value() {
    curl -fsS --max-time 5 -G "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
        sed -n 's/.*"value":\[[^,]*,"\([^"]*\)"\].*/\1/p'
}

# prom_at_least QUERY MIN: true when QUERY returns one sample whose value is >= MIN.
prom_at_least() {
    local v
    v=$(prom_value "$1")
    [ -n "$v" ] && awk -v v="$v" -v m="$2" 'BEGIN { exit !(v + 0 >= m + 0) }'
}

# prom_above QUERY MIN: true when QUERY returns one sample whose value is > MIN.
prom_above() {
    local v
    v=$(prom_value "$1")
    [ -n "$v" ] && awk -v v="$v" -v m="$2" 'BEGIN { exit !(v + 0 > m + 0) }'
}

# ---------------------------------------------------------------------------------------------------
# Traffic from a real Python RNS peer (rns 1.5.7): link to the demo group, identify, read
# /api/v1/info, and make one request the server refuses (an unknown path). Then the request
# counters and the duration histogram must have moved in Prometheus, and the raw endpoint must
# pass `promtool check metrics` with those series present.
drive_traffic() {
    local py group out
    py=$(bash "$repo/tests/py/setup-venv.sh") || { fail "python venv"; return; }
    group=$(sed -n 's/.*meshchat.group <\([0-9a-f]\{32\}\)>.*/\1/p' "$demo_log" | head -n1)
    [ -n "$group" ] || { fail "demo group hash in the server output"; return; }
    out=$(timeout 90 "$py" - "$rns_port" "$group" "$tmp/peer" <<'PY' 2>"$tmp/peer.err"
import os, sys, threading, time
import RNS
port, group, d = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3]
os.makedirs(d, exist_ok=True)
open(os.path.join(d, "config"), "w").write(
    "[reticulum]\n  enable_transport = False\n  share_instance = No\n[interfaces]\n"
    f"  [[mg]]\n    type = TCPClientInterface\n    enabled = yes\n    target_host = 127.0.0.1\n    target_port = {port}\n")
RNS.Reticulum(configdir=d, loglevel=RNS.LOG_WARNING, logdest=lambda m: sys.stderr.write(m + "\n"))
RNS.Transport.request_path(group)
end = time.time() + 30
while not RNS.Identity.recall(group) and time.time() < end:
    time.sleep(0.1)
dest = RNS.Destination(RNS.Identity.recall(group), RNS.Destination.OUT, RNS.Destination.SINGLE, "meshchat", "group")
up = threading.Event()
link = RNS.Link(dest, established_callback=lambda l: up.set())
assert up.wait(20), "no link"
link.identify(RNS.Identity())
time.sleep(0.5)
for path in ["/api/v1/info", "/api/v1/nope"]:
    done = threading.Event()
    link.request(path, data=None, response_callback=lambda r: done.set(), failed_callback=lambda r: done.set(), timeout=20)
    done.wait(25)
print("requests done")
os._exit(0)
PY
)
    if [ "$out" = "requests done" ]; then pass "a Python RNS peer read /api/v1/info and made a refused request"; else
        fail "Python peer traffic (see below)"; tail -n 20 "$tmp/peer.err"; return; fi
    local q
    for q in 'sum(meshgroup_requests_total{job="meshgroup",path="/api/v1/info",outcome="ok"})' \
             'sum(meshgroup_requests_total{job="meshgroup",outcome="not_found"})' \
             'sum(meshgroup_request_duration_seconds_count{job="meshgroup"})'; do
        if wait_for "$q >= 1" prom_at_least "$q" 1; then pass "$q = $(prom_value "$q")"; else
            fail "$q >= 1 (got '$(prom_value "$q")')"; fi
    done
    if curl -fsS "http://127.0.0.1:$metrics_port/metrics" | promtool check metrics >"$tmp/promtool.out" 2>&1; then
        pass "promtool check metrics on the raw endpoint, request series included"
    else
        fail "promtool check metrics"; cat "$tmp/promtool.out"
    fi
}
# ---------------------------------------------------------------------------------------------------

# --- binaries
if [ ! -x "$PROMETHEUS_BIN" ]; then
    echo "no Prometheus at $PROMETHEUS_BIN (apt-get install -y prometheus)" >&2
    exit 1
fi
if [ -z "${MESHGROUP_BIN:-}" ]; then
    cargo build --quiet --bin meshgroup || exit 1
    MESHGROUP_BIN=$repo/target/debug/meshgroup
fi

metrics_port=$(free_port) || exit 1
rns_port=$(free_port) || exit 1
prom_port=$(free_port) || exit 1

# --- meshgroup
mkdir -p "$tmp/data" "$tmp/prometheus"
cat >"$tmp/meshgroup.toml" <<EOF
data_dir = "$tmp/data"

[metrics]
listen = "127.0.0.1:$metrics_port"
per_group = false

[[reticulum.interfaces]]
type = "tcp_server"
listen = "127.0.0.1:$rns_port"
EOF
demo_log=$tmp/meshgroup.out
MESHGROUP_DATA_DIR=$tmp/data MESHGROUP_METRICS__LISTEN=127.0.0.1:$metrics_port \
    "$MESHGROUP_BIN" --config "$tmp/meshgroup.toml" serve --demo >"$demo_log" 2>"$tmp/meshgroup.err" &
pids+=($!)
meshgroup_pid=$!

# --- prometheus
rule_files=""
for f in "$repo"/grafana/alerts/*.yaml; do
    [ -e "$f" ] && rule_files="$rule_files  - $f"$'\n'
done
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
$rule_files
scrape_configs:
  - job_name: meshgroup
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF
"$PROMETHEUS_BIN" --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prometheus" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
prom_pid=$!

echo "meshgroup pid $meshgroup_pid metrics 127.0.0.1:$metrics_port rns 127.0.0.1:$rns_port; prometheus pid $prom_pid on 127.0.0.1:$prom_port"

metrics_answer() { curl -fsS --max-time 2 "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null | grep -q '^meshgroup_'; }
prom_ready() { curl -fsS --max-time 2 "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1; }

if wait_for "meshgroup /metrics" metrics_answer; then
    pass "meshgroup serves /metrics on 127.0.0.1:$metrics_port"
else
    fail "meshgroup serves /metrics"
    echo "--- meshgroup stderr"; tail -n 20 "$tmp/meshgroup.err"
fi
if wait_for "prometheus ready" prom_ready; then
    pass "prometheus ready on 127.0.0.1:$prom_port"
else
    fail "prometheus ready"
    echo "--- prometheus log"; tail -n 20 "$tmp/prometheus.log"
fi

if wait_for 'up{job="meshgroup"} == 1' prom_at_least 'up{job="meshgroup"}' 1; then
    pass 'up{job="meshgroup"} is 1'
else
    fail "up{job=\"meshgroup\"} is 1 (got '$(prom_value 'up{job="meshgroup"}')')"
fi
# Sampled every 5 s by the server, so it takes a few scrapes to appear.
if wait_for "meshgroup_groups_hosted >= 1" prom_at_least 'meshgroup_groups_hosted{job="meshgroup"}' 1; then
    pass "meshgroup_groups_hosted = $(prom_value 'meshgroup_groups_hosted{job="meshgroup"}') (>= 1, the demo group)"
else
    fail "meshgroup_groups_hosted >= 1 (got '$(prom_value 'meshgroup_groups_hosted{job="meshgroup"}')')"
fi

drive_traffic

q='sum(meshgroup_db_query_duration_seconds_count{job="meshgroup"})'
if wait_for "$q > 0" prom_above "$q" 0; then
    pass "meshgroup_db_query_duration_seconds_count = $(prom_value "$q") (> 0)"
else
    fail "meshgroup_db_query_duration_seconds_count > 0 (got '$(prom_value "$q")')"
fi

# Every alerting rule has been evaluated against real series without error.
rules_healthy() {
    local body ok bad
    body=$(curl -fsS --max-time 5 "http://127.0.0.1:$prom_port/api/v1/rules?type=alert" 2>/dev/null) || return 1
    ok=$(grep -o '"health":"ok"' <<<"$body" | wc -l)
    bad=$(grep -o '"health":"[a-z]*"' <<<"$body" | grep -vc '"ok"')
    rules_seen="$ok ok, $bad not ok"
    [ "$ok" -gt 0 ] && [ "$bad" -eq 0 ]
}
rules_seen="none"
if wait_for "alert rules healthy" rules_healthy; then
    pass "alerting rules loaded and evaluated ($rules_seen)"
else
    fail "alerting rules loaded and evaluated ($rules_seen)"
fi

if ! kill -0 "$meshgroup_pid" 2>/dev/null; then
    fail "meshgroup still running at the end"
    echo "--- meshgroup stderr"; tail -n 20 "$tmp/meshgroup.err"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
