#!/usr/bin/env bash
# Checks the Prometheus alerting rules in grafana/alerts/ with promtool:
#   1. `promtool check rules` (syntax, PromQL, annotation templates);
#   2. `promtool test rules` on a copy without annotations: each alert fires on a synthetic bad series
#      and stays quiet on a healthy one (the test cases are below, in write_tests);
#   3. optionally, with METRICS_URL set (e.g. METRICS_URL=http://127.0.0.1:9464/metrics), pipes a live
#      scrape into `promtool check metrics` (naming and help lint).
# Installs the Debian `prometheus` package (which ships promtool) when promtool is missing.
# No network besides apt; the metrics check talks to loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool missing; installing the Debian prometheus package"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

shopt -s nullglob
rules=(grafana/alerts/*.yaml)
if [ ${#rules[@]} -eq 0 ]; then
    echo "no rule files under grafana/alerts/" >&2
    exit 1
fi

echo "== promtool check rules"
promtool check rules "${rules[@]}"

# promtool compares annotations exactly, so the unit tests run against a copy without them.
strip_annotations() {
    awk '
        skip && (match($0, /^ */) && RLENGTH <= indent) && $0 !~ /^ *$/ { skip = 0 }
        /^ *annotations:/ { skip = 1; match($0, /^ */); indent = RLENGTH; next }
        !skip { print }
    ' "$1"
}
i=0
stripped=()
for f in "${rules[@]}"; do
    i=$((i + 1))
    strip_annotations "$f" >"$tmp/rules$i.yaml"
    stripped+=("$tmp/rules$i.yaml")
done

write_tests() {
    echo "rule_files:"
    for f in "${stripped[@]}"; do echo "  - $f"; done
    cat <<'YAML'
evaluation_interval: 1m
tests:
  - name: server down fires after 2m, not while up
    interval: 1m
    input_series:
      - series: 'up{job="meshgroup", instance="a:9464"}'
        values: '0x10'
      - series: 'up{job="meshgroup", instance="b:9464"}'
        values: '1x10'
    alert_rule_test:
      - eval_time: 1m
        alertname: MeshgroupDown
        exp_alerts: []
      - eval_time: 5m
        alertname: MeshgroupDown
        exp_alerts:
          - exp_labels: {severity: critical, job: meshgroup, instance: "a:9464"}

  - name: pending outbox growing for 15m fires, flat does not
    interval: 1m
    input_series:
      - series: 'meshgroup_outbox_depth{job="meshgroup", instance="a:9464", state="pending"}'
        values: '0+10x40'
      - series: 'meshgroup_outbox_depth{job="meshgroup", instance="b:9464", state="pending"}'
        values: '500x40'
      - series: 'meshgroup_outbox_depth{job="meshgroup", instance="b:9464", state="sent"}'
        values: '0+10x40'
    alert_rule_test:
      - eval_time: 10m
        alertname: MeshgroupOutboxPendingGrowing
        exp_alerts: []
      - eval_time: 30m
        alertname: MeshgroupOutboxPendingGrowing
        exp_alerts:
          - exp_labels: {severity: warning, job: meshgroup, instance: "a:9464", state: pending}

  - name: delivery failure ratio above 20% fires, 10% does not
    interval: 1m
    input_series:
      - series: 'meshgroup_deliveries_total{job="meshgroup", instance="a:9464", mode="fanout", method="direct", outcome="failed"}'
        values: '0+3x30'
      - series: 'meshgroup_deliveries_total{job="meshgroup", instance="a:9464", mode="fanout", method="direct", outcome="delivered"}'
        values: '0+7x30'
      - series: 'meshgroup_deliveries_total{job="meshgroup", instance="b:9464", mode="fanout", method="direct", outcome="failed"}'
        values: '0+1x30'
      - series: 'meshgroup_deliveries_total{job="meshgroup", instance="b:9464", mode="fanout", method="direct", outcome="delivered"}'
        values: '0+9x30'
    alert_rule_test:
      - eval_time: 25m
        alertname: MeshgroupDeliveryFailureRatioHigh
        exp_alerts:
          - exp_labels: {severity: warning, job: meshgroup, instance: "a:9464"}

  - name: delivery failures on tiny volume stay quiet
    interval: 1m
    input_series:
      - series: 'meshgroup_deliveries_total{job="meshgroup", instance="a:9464", mode="fanout", method="direct", outcome="failed"}'
        values: '0+0.5x30'
      - series: 'meshgroup_deliveries_total{job="meshgroup", instance="a:9464", mode="fanout", method="direct", outcome="delivered"}'
        values: '0+0.5x30'
    alert_rule_test:
      - eval_time: 25m
        alertname: MeshgroupDeliveryFailureRatioHigh
        exp_alerts: []

  - name: stamp refusals spiking fires per purpose (and keeps the group label), valid stamps do not
    interval: 1m
    input_series:
      - series: 'meshgroup_stamps_checked_total{job="meshgroup", instance="a:9464", group="g1", purpose="post", outcome="invalid"}'
        values: '0+40x20'
      - series: 'meshgroup_stamps_checked_total{job="meshgroup", instance="a:9464", group="g1", purpose="post", outcome="missing"}'
        values: '0+20x20'
      - series: 'meshgroup_stamps_checked_total{job="meshgroup", instance="a:9464", group="g1", purpose="join", outcome="valid"}'
        values: '0+600x20'
    alert_rule_test:
      - eval_time: 3m
        alertname: MeshgroupStampRefusalsSpiking
        exp_alerts: []
      - eval_time: 15m
        alertname: MeshgroupStampRefusalsSpiking
        exp_alerts:
          - exp_labels: {severity: warning, job: meshgroup, instance: "a:9464", group: g1, purpose: post}

  - name: transport events lost fires on an increase and on a counter born above zero
    interval: 1m
    input_series:
      - series: 'meshgroup_transport_events_lost_total{job="meshgroup", instance="a:9464", channel="packets"}'
        values: '0 0 0 5 5 5 5 5 5 5 5 5 5 5 5'
      - series: 'meshgroup_transport_events_lost_total{job="meshgroup", instance="a:9464", channel="links"}'
        values: '_ _ _ 4 4 4 4 4 4 4 4 4 4 4 4'
      - series: 'meshgroup_transport_events_lost_total{job="meshgroup", instance="b:9464", channel="packets"}'
        values: '0x14'
    alert_rule_test:
      - eval_time: 2m
        alertname: MeshgroupTransportEventsLost
        exp_alerts: []
      - eval_time: 5m
        alertname: MeshgroupTransportEventsLost
        exp_alerts:
          - exp_labels: {severity: warning, job: meshgroup, instance: "a:9464", channel: packets}
          - exp_labels: {severity: warning, job: meshgroup, instance: "a:9464", channel: links}
      - eval_time: 14m
        alertname: MeshgroupTransportEventsLost
        exp_alerts: []

  - name: store p95 above 250 ms for 10m fires, fast store does not
    interval: 1m
    input_series:
      - series: 'meshgroup_db_query_duration_seconds_bucket{job="meshgroup", instance="a:9464", op="insert_message", le="0.1"}'
        values: '0+1x30'
      - series: 'meshgroup_db_query_duration_seconds_bucket{job="meshgroup", instance="a:9464", op="insert_message", le="0.5"}'
        values: '0+10x30'
      - series: 'meshgroup_db_query_duration_seconds_bucket{job="meshgroup", instance="a:9464", op="insert_message", le="+Inf"}'
        values: '0+10x30'
      - series: 'meshgroup_db_query_duration_seconds_bucket{job="meshgroup", instance="a:9464", op="count_groups", le="0.1"}'
        values: '0+10x30'
      - series: 'meshgroup_db_query_duration_seconds_bucket{job="meshgroup", instance="a:9464", op="count_groups", le="0.5"}'
        values: '0+10x30'
      - series: 'meshgroup_db_query_duration_seconds_bucket{job="meshgroup", instance="a:9464", op="count_groups", le="+Inf"}'
        values: '0+10x30'
    alert_rule_test:
      - eval_time: 5m
        alertname: MeshgroupDbLatencyHigh
        exp_alerts: []
      - eval_time: 20m
        alertname: MeshgroupDbLatencyHigh
        exp_alerts:
          - exp_labels: {severity: warning, job: meshgroup, instance: "a:9464", op: insert_message}
YAML
}

echo "== promtool test rules"
write_tests >"$tmp/tests.yaml"
promtool test rules "$tmp/tests.yaml"

if [ -n "${METRICS_URL:-}" ]; then
    echo "== promtool check metrics ($METRICS_URL)"
    curl -fsS --max-time 10 "$METRICS_URL" | promtool check metrics
fi
echo "promtool: all checks passed"
