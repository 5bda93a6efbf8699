#!/usr/bin/env bash
# Metrics benchmarks of issue #3, side by side in one run (docs/BENCHMARKS.md):
#  1. PutMetricData ingest, 1,000 datums x 10 values per request (CBOR, what
#     aws-sdk-rust sends), WAL fsynced before each answer, beside
#     VictoriaMetrics importing the same points (JSON lines) and moto_server;
#  2. stored bytes per value after compaction: 1 day x 1,000 series of
#     1-minute host-like metrics, trailwatch beside VictoriaMetrics;
#  3. GetMetricData, 100 series x 1 day at a 1-minute period (every page),
#     beside VictoriaMetrics query_range over the same series.
# Needs: release builds of trailwatch and trailwatch-bench, victoria-metrics
# (Debian package) and moto_server on PATH. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
requests="${INGEST_REQUESTS:-2000}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=AKIABENCH00000000001 AWS_SECRET_ACCESS_KEY=bench-secret-0000000000000000000000000000
export TRAILWATCH_ROOT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID TRAILWATCH_ROOT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export TRAILWATCH_ACCOUNT_ID=123456789012 TRAILWATCH_LOG=warn
bench="$target/trailwatch-bench"

start_trailwatch() { # data dir, port
  rm -f "$1.ready"
  "$target/trailwatch" serve --listen "127.0.0.1:$2" --data-dir "$1" --ready-file "$1.ready" \
    --flush-interval-secs 2 >"$1.log" 2>&1 &
  tw_pid=$!
  for _ in $(seq 600); do [ -s "$1.ready" ] && return; sleep 0.1; done
  echo "trailwatch did not start" >&2; exit 1
}

start_vm() { # data dir, port
  victoria-metrics -storageDataPath "$1" -httpListenAddr "127.0.0.1:$2" -retentionPeriod 100y \
    -search.latencyOffset 0s -loggerLevel ERROR >"$1.log" 2>&1 &
  vm_pid=$!
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$2/health" >/dev/null && return; sleep 0.1; done
  echo "victoria-metrics did not start" >&2; exit 1
}

stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

echo "## 1. ingest: $requests requests of 1,000 datums x 10 values, 8 connections"
for round in 1 2; do
  start_trailwatch "$work/ingest-tw-$round" 24620
  "$bench" call --endpoint http://127.0.0.1:24620 --operation put-metric-data --series 1000 --values 10 \
    --bodies 64 --connections 8 --requests "$requests" --warmup 2 --server-pid "$tw_pid" --label trailwatch
  stop "$tw_pid"
  start_vm "$work/ingest-vm-$round" 24621
  "$bench" call --endpoint http://127.0.0.1:24621 --operation vm-import --series 1000 --values 10 \
    --bodies 64 --connections 8 --requests "$requests" --warmup 2 --server-pid "$vm_pid" --label victoria-metrics
  stop "$vm_pid"
done
moto_server -H 127.0.0.1 -p 24622 >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:24622/ && break; sleep 0.1; done
# moto_server answers CloudWatch in the query protocol only.
"$bench" call --endpoint http://127.0.0.1:24622 --operation put-metric-data --protocol query --series 1000 \
  --values 10 --bodies 4 --connections 2 --requests 4 --warmup 0 --server-pid "$moto_pid" --label moto_server
stop "$moto_pid"

echo "## 2. bytes per value: 1 day x 1,000 series, one value a minute (1,440,000 values)"
start_trailwatch "$work/day-tw" 24623
"$bench" call --endpoint http://127.0.0.1:24623 --operation put-metric-data --series 1000 --values 1 \
  --bodies 1440 --connections 4 --requests 1440 --warmup 0 --server-pid "$tw_pid" --label trailwatch
# A graceful stop flushes and compacts every day: what is left is the stored size.
stop "$tw_pid"
segments=$(du -sb "$work/day-tw/objects/metrics" | cut -f1)
wal=$(du -sb "$work/day-tw/metrics" | cut -f1)
echo "{\"label\": \"trailwatch\", \"segment_bytes\": $segments, \"wal_bytes\": $wal, \"bytes_per_value\": $(echo "scale=3; ($segments + $wal) / 1440000" | bc)}"
start_trailwatch "$work/day-tw" 24623
start_vm "$work/day-vm" 24624
"$bench" call --endpoint http://127.0.0.1:24624 --operation vm-import --series 1000 --values 1 \
  --bodies 1440 --connections 4 --requests 1440 --warmup 0 --server-pid "$vm_pid" --label victoria-metrics
curl -sf http://127.0.0.1:24624/internal/force_flush >/dev/null
curl -sf http://127.0.0.1:24624/internal/force_merge >/dev/null
sleep 8
vm_bytes=$(du -sb "$work/day-vm" | cut -f1)
echo "{\"label\": \"victoria-metrics\", \"data_dir_bytes\": $vm_bytes, \"bytes_per_value\": $(echo "scale=3; $vm_bytes / 1440000" | bc)}"

echo "## 3. GetMetricData: 100 series x 1 day at 1 minute (144,000 values, every page)"
"$bench" call --endpoint http://127.0.0.1:24623 --operation get-metric-data --series 100 --hours 24 \
  --connections 1 --requests 100 --warmup 5 --server-pid "$tw_pid" --label trailwatch
"$bench" call --endpoint http://127.0.0.1:24624 --operation vm-query-range --series 100 --hours 24 \
  --connections 1 --requests 100 --warmup 5 --server-pid "$vm_pid" --label victoria-metrics
stop "$tw_pid"; stop "$vm_pid"
