#!/usr/bin/env bash
# Alarm benchmarks of issue #5, side by side in one run (docs/BENCHMARKS.md):
#  1. evaluation cost: 100,000 metric alarms over 1,000 one-minute series
#     (2 of 3 periods, Average), evaluated every minute by trailwatch while a
#     minute of data arrives each minute, beside Prometheus evaluating
#     100,000 alerting rules over the same number of series each minute. The
#     figure is each server's CPU seconds per minute over MINUTES minutes,
#     read from /proc, so ingest and everything else a server does is in it.
#  2. notification latency: bench/alarm_latency.py, breaching datapoint
#     PutMetricData to the SNS POST at a local receiver, p50 and p99, beside
#     bench/prometheus_latency.py: a gauge crossing a rule evaluated every
#     10 s to the Alertmanager webhook POST.
# Needs: release builds of trailwatch and trailwatch-bench, prometheus and
# prometheus-alertmanager (Debian packages), python3 with boto3. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
alarms="${ALARMS:-100000}"
series="${SERIES:-1000}"  # PutMetricData takes at most 1,000 datums per request
minutes="${MINUTES:-5}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=AKIABENCH00000000001 AWS_SECRET_ACCESS_KEY=bench-secret-0000000000000000000000000000
export TRAILWATCH_ROOT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID TRAILWATCH_ROOT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export TRAILWATCH_ACCOUNT_ID=123456789012
bench="$target/trailwatch-bench"
tick=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Sleeps until `$1` seconds past the next whole minute.
next_minute() { sleep $(( 60 - $(date +%s) % 60 + $1 )); }

echo "## 1. evaluation: $alarms alarms over $series series, CPU over $minutes minutes"
TRAILWATCH_LOG="warn,trailwatch_server::evaluator=debug" "$target/trailwatch" serve \
  --listen 127.0.0.1:24640 --data-dir "$work/tw" --ready-file "$work/tw.ready" >"$work/tw.log" 2>&1 &
tw_pid=$!
for _ in $(seq 600); do [ -s "$work/tw.ready" ] && break; sleep 0.1; done
put_minutes() { # requests of one minute of every series, ending now
  "$bench" call --endpoint http://127.0.0.1:24640 --operation put-metric-data --series "$series" \
    --values 1 --bodies "$1" --requests "$1" --warmup 0 --connections 1 --label history >/dev/null
}
put_minutes 20
"$bench" call --endpoint http://127.0.0.1:24640 --operation put-metric-alarm --series "$series" \
  --bodies "$alarms" --requests "$alarms" --warmup 0 --connections 8 --label put-metric-alarm
next_minute 30
before=$(cpu_ticks "$tw_pid")
for _ in $(seq "$minutes"); do
  put_minutes 1
  next_minute 30
done
after=$(cpu_ticks "$tw_pid")
echo "trailwatch: $(( (after - before) )) ticks in $minutes min = $(awk "BEGIN{printf \"%.2f\", ($after-$before)/$tick/$minutes}") CPU s/min = $(awk "BEGIN{printf \"%.1f\", 100*($after-$before)/$tick/($minutes*60)}")% of one core"
# The last minute ticks (wall time of one evaluation of every alarm).
sed 's/\x1b\[[0-9;]*m//g' "$work/tw.log" | grep 'alarm evaluation tick' | grep 'cadence_ms=60000' |
  tail -n "$minutes" | sed -E 's/.*evaluated=([0-9]+).*transitions=([0-9]+).*elapsed_ms=([0-9]+).*/  tick: \1 alarms, \2 transitions, \3 ms/' || true
kill "$tw_pid"; wait "$tw_pid" 2>/dev/null || true

echo "## 1b. Prometheus 2.x: $alarms alerting rules over $series series"
mkdir -p "$work/prom/www"
python3 - "$work/prom" "$series" "$alarms" <<'EOF'
import sys
root, series, rules = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(f"{root}/www/metrics", "w") as f:
    for i in range(series):
        f.write(f'bench_value{{series="s{i}"}} {(i * 37) % 100}\n')
with open(f"{root}/rules.yml", "w") as f:
    f.write("groups:\n")
    for g in range(0, rules, 1000):
        f.write(f"- name: g{g}\n  interval: 60s\n  rules:\n")
        for i in range(g, min(g + 1000, rules)):
            f.write(f"  - alert: a{i}\n    expr: avg_over_time(bench_value{{series=\"s{i % series}\"}}[3m]) > {20 + i % 60}\n    for: 2m\n")
with open(f"{root}/prometheus.yml", "w") as f:
    f.write(f"""global:
  scrape_interval: 60s
  evaluation_interval: 60s
rule_files: ["{root}/rules.yml"]
scrape_configs:
- job_name: bench
  static_configs: [{{targets: ["127.0.0.1:24642"]}}]
""")
EOF
(cd "$work/prom/www" && exec python3 -m http.server 24642 --bind 127.0.0.1 >/dev/null 2>&1) &
prometheus --config.file "$work/prom/prometheus.yml" --storage.tsdb.path "$work/prom/data" \
  --web.listen-address 127.0.0.1:24641 --log.level warn >"$work/prom.log" 2>&1 &
prom_pid=$!
next_minute 30
next_minute 30
before=$(cpu_ticks "$prom_pid")
for _ in $(seq "$minutes"); do next_minute 30; done
after=$(cpu_ticks "$prom_pid")
echo "prometheus: $(( (after - before) )) ticks in $minutes min = $(awk "BEGIN{printf \"%.2f\", ($after-$before)/$tick/$minutes}") CPU s/min = $(awk "BEGIN{printf \"%.1f\", 100*($after-$before)/$tick/($minutes*60)}")% of one core"
curl -s "http://127.0.0.1:24641/api/v1/query?query=sum(prometheus_rule_group_last_duration_seconds)" |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print("  rule groups last evaluation: %.0f ms" % (1000*float(r[0]["value"][1])) if r else "  (no rule timing)")'
kill "$prom_pid"; wait "$prom_pid" 2>/dev/null || true

echo "## 2. breach -> notification latency"
python3 bench/alarm_latency.py --binary "$target/trailwatch" --data-dir "$work/latency"
python3 bench/prometheus_latency.py --work "$work/prom-latency"
