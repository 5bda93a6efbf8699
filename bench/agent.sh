#!/usr/bin/env bash
# Host agent benchmarks of issue #7, side by side in one run (docs/BENCHMARKS.md):
#  1. log shipping throughput: one file of seeded ~200-byte lines, shipped by
#     `trailwatch agent` (tailing, fsynced spool, saved offsets) and, as its
#     peer, sent by a plain aws-sdk-rust PutLogEvents loop
#     (`trailwatch-bench ship-file`), each to a fresh trailwatch; each run ends
#     when the server's storedBytes equals the file's bytes of lines;
#  2. agent overhead at a 60-second interval: `trailwatch agent` with all
#     eight metric plugins and one log file written once a second, beside
#     collectd 5 with the same plugins at the same interval (writing CSV),
#     both sampled from /proc/<pid>/stat and /proc/<pid>/status.
# Needs: release builds of trailwatch and trailwatch-bench; python3 with
# boto3 on PATH; collectd (Debian's collectd-core). Everything listens on
# 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
size_mb="${SIZE_MB:-1024}"
minutes="${OVERHEAD_MINUTES:-10}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=AKIABENCH00000000001 AWS_SECRET_ACCESS_KEY=bench-secret-0000000000000000000000000000
export TRAILWATCH_ROOT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID TRAILWATCH_ROOT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export TRAILWATCH_ACCOUNT_ID=123456789012 TRAILWATCH_LOG=warn AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null

start_trailwatch() { # data dir, port
  rm -f "$1.ready"
  "$target/trailwatch" serve --no-host-agent --listen "127.0.0.1:$2" --data-dir "$1" --ready-file "$1.ready" >"$1.log" 2>&1 &
  tw_pid=$!
  for _ in $(seq 600); do [ -s "$1.ready" ] && return; sleep 0.1; done
  echo "trailwatch did not start" >&2; exit 1
}

cpu_seconds() { # pid: user + system seconds
  awk '{ sub(/.*\) /, ""); print ($12 + $13) / 100 }' "/proc/$1/stat"
}

# Waits until log group $2 at endpoint $1 stores $3 bytes; prints the seconds
# since $4 (epoch seconds, fractional).
wait_stored() {
  python3 - "$@" <<'PY'
import sys, time, boto3
endpoint, group, want, t0 = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
logs = boto3.client("logs", endpoint_url=endpoint)
deadline = time.time() + 900
while time.time() < deadline:
    groups = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    stored = sum(g.get("storedBytes", 0) for g in groups if g["logGroupName"] == group)
    if stored >= want:
        print(f"{time.time() - t0:.2f} {stored}")
        sys.exit(0 if stored == want else 1)
    time.sleep(0.1)
sys.exit("timed out")
PY
}

if [ "$size_mb" -gt 0 ]; then
echo "## 1. Log shipping: $size_mb MB of ~200-byte lines"
python3 - "$work/app.log" "$size_mb" <<'PY'
import random, sys
rng = random.Random(7)
words = "request user session cache miss hit db query latency retry upstream checkout cart item token region".split()
target = int(sys.argv[2]) * 1_000_000
with open(sys.argv[1], "w") as f:
    written, n = 0, 0
    while written < target:
        fields = " ".join(f"{rng.choice(words)}={rng.randrange(1_000_000)}" for _ in range(12))
        line = f"2026-12-06T10:00:00.{n % 1000:03d}Z INFO [req-{rng.getrandbits(32):08x}] {fields}"[:220]
        f.write(line + "\n")
        written += len(line) + 1
        n += 1
PY
lines=$(wc -l <"$work/app.log")
line_bytes=$(( $(stat -c %s "$work/app.log") - lines ))
echo "file: $lines lines, $line_bytes bytes of lines"

start_trailwatch "$work/tw-agent" 24660
cat >"$work/agent.json" <<JSON
{"agent": {"region": "us-east-1"},
 "logs": {"endpoint_override": "http://127.0.0.1:24660",
          "logs_collected": {"files": {"collect_list": [
            {"file_path": "$work/app.log", "log_group_name": "bench-agent", "log_stream_name": "agent"}]}}}}
JSON
t0=$(date +%s.%N)
"$target/trailwatch" agent --config "$work/agent.json" --state-dir "$work/agent-state" >"$work/agent.log" 2>&1 &
agent_pid=$!
server_cpu0=$(cpu_seconds "$tw_pid")
read -r secs stored < <(wait_stored http://127.0.0.1:24660 bench-agent "$line_bytes" "$t0")
agent_cpu=$(cpu_seconds "$agent_pid")
agent_hwm=$(awk '/VmHWM/ {print $2}' "/proc/$agent_pid/status")
server_cpu=$(echo "$(cpu_seconds "$tw_pid") - $server_cpu0" | bc)
echo "trailwatch agent: $stored bytes stored in $secs s: $(echo "scale=1; $stored / 1000000 / $secs" | bc) MB/s; agent CPU ${agent_cpu} s, peak RSS $((agent_hwm / 1024)) MiB; server CPU ${server_cpu} s"
kill "$agent_pid" "$tw_pid"; wait "$agent_pid" "$tw_pid" 2>/dev/null || true

start_trailwatch "$work/tw-peer" 24661
server_cpu0=$(cpu_seconds "$tw_pid")
"$target/trailwatch-bench" ship-file --endpoint http://127.0.0.1:24661 --file "$work/app.log" --group bench-ship
read -r _ stored < <(wait_stored http://127.0.0.1:24661 bench-ship "$line_bytes" "$(date +%s.%N)")
echo "peer: $stored bytes stored; server CPU $(echo "$(cpu_seconds "$tw_pid") - $server_cpu0" | bc) s"
kill "$tw_pid"; wait "$tw_pid" 2>/dev/null || true
rm -f "$work/app.log"
fi

[ "$minutes" -gt 0 ] || exit 0
echo "## 2. Overhead at a 60 s interval, $minutes minutes"
start_trailwatch "$work/tw-overhead" 24662
cat >"$work/overhead.json" <<JSON
{"agent": {"metrics_collection_interval": 60, "region": "us-east-1"},
 "metrics": {"endpoint_override": "http://127.0.0.1:24662",
   "append_dimensions": {"InstanceId": "\${aws:InstanceId}"},
   "aggregation_dimensions": [["host"], []],
   "metrics_collected": {
     "cpu": {"measurement": ["cpu_usage_idle", "cpu_usage_iowait", "cpu_usage_user", "cpu_usage_system"], "totalcpu": true, "resources": ["*"]},
     "mem": {"measurement": ["mem_used_percent", "mem_used", "mem_total", "mem_available"]},
     "swap": {"measurement": ["swap_used_percent"]},
     "disk": {"measurement": ["used_percent", "inodes_free"], "resources": ["*"]},
     "diskio": {"measurement": ["io_time", "reads", "writes", "read_bytes", "write_bytes"], "resources": ["*"]},
     "net": {"measurement": ["bytes_sent", "bytes_recv", "packets_sent", "packets_recv"], "resources": ["*"]},
     "netstat": {"measurement": ["tcp_established", "tcp_time_wait"]},
     "processes": {"measurement": ["running", "sleeping", "total"]}}},
 "logs": {"endpoint_override": "http://127.0.0.1:24662",
   "logs_collected": {"files": {"collect_list": [
     {"file_path": "$work/trickle.log", "log_group_name": "bench-trickle", "log_stream_name": "{hostname}"}]}}}}
JSON
mkdir -p "$work/collectd"
cat >"$work/collectd.conf" <<CONF
Interval 60
BaseDir "$work/collectd"
PIDFile "$work/collectd/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin swap
LoadPlugin df
LoadPlugin disk
LoadPlugin interface
LoadPlugin tcpconns
LoadPlugin processes
LoadPlugin csv
<Plugin cpu>
  ReportByCpu true
  ReportByState true
  ValuesPercentage true
</Plugin>
<Plugin tcpconns>
  AllPortsSummary true
</Plugin>
<Plugin csv>
  DataDir "$work/collectd/csv"
</Plugin>
CONF
(while :; do echo "$(date -u +%FT%TZ) INFO heartbeat request served in 12 ms" >>"$work/trickle.log"; sleep 1; done) &
"$target/trailwatch" agent --config "$work/overhead.json" --state-dir "$work/overhead-state" >"$work/overhead.log" 2>&1 &
agent_pid=$!
collectd -f -C "$work/collectd.conf" >"$work/collectd.log" 2>&1 &
collectd_pid=$!
sleep 10 # both past their start-up
a0=$(cpu_seconds "$agent_pid"); c0=$(cpu_seconds "$collectd_pid"); t0=$(date +%s.%N)
a_rss_max=0; c_rss_max=0
for _ in $(seq $((minutes * 6))); do
  sleep 10
  a_rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent_pid/status"); c_rss=$(awk '/VmRSS/ {print $2}' "/proc/$collectd_pid/status")
  [ "$a_rss" -gt "$a_rss_max" ] && a_rss_max=$a_rss
  [ "$c_rss" -gt "$c_rss_max" ] && c_rss_max=$c_rss
done
elapsed=$(echo "$(date +%s.%N) - $t0" | bc)
a1=$(cpu_seconds "$agent_pid"); c1=$(cpu_seconds "$collectd_pid")
report() { # label, cpu0, cpu1, max rss KiB, pid
  echo "$1: CPU $(echo "$3 - $2" | bc) s over ${elapsed%.*} s = $(echo "scale=3; 100 * ($3 - $2) / $elapsed" | bc) % of a core; RSS max $(($4 / 1024)) MiB, peak $(( $(awk '/VmHWM/ {print $2}' "/proc/$5/status") / 1024 )) MiB"
}
report "trailwatch agent" "$a0" "$a1" "$a_rss_max" "$agent_pid"
report "collectd" "$c0" "$c1" "$c_rss_max" "$collectd_pid"
python3 - http://127.0.0.1:24662 <<'PY'
import sys, boto3
cw = boto3.client("cloudwatch", endpoint_url=sys.argv[1])
names = {m["MetricName"] for page in cw.get_paginator("list_metrics").paginate(Namespace="CWAgent") for m in page["Metrics"]}
logs = boto3.client("logs", endpoint_url=sys.argv[1])
events = sum(len(p["events"]) for p in logs.get_paginator("filter_log_events").paginate(logGroupName="bench-trickle"))
print(f"agent published {len(names)} CWAgent metric names; {events} trickled log lines stored")
PY
