#!/usr/bin/env bash
# Spine benchmarks of issue #2, side by side in one run (docs/BENCHMARKS.md):
#  1. authenticated throughput of a trivial call (STS GetCallerIdentity):
#     trailwatch beside moto_server;
#  2. LookupEvents first-page latency over RECORDS seeded records beside DuckDB
#     on a native table of the same records.
# Needs: release builds of trailwatch and trailwatch-bench, moto_server and the
# duckdb Python package on PATH / in python3. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
records="${RECORDS:-10000000}"
work="$(mktemp -d)"
# KEEP_HISTORY=DIR keeps the seeded history there, and reuses it on the next run.
history="${KEEP_HISTORY:-$work/history}"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=AKIABENCH00000000001 AWS_SECRET_ACCESS_KEY=bench-secret-0000000000000000000000000000
export TRAILWATCH_ROOT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID TRAILWATCH_ROOT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export TRAILWATCH_ACCOUNT_ID=123456789012 TRAILWATCH_LOG=warn

start_trailwatch() { # data dir, port
  rm -f "$1.ready"
  "$target/trailwatch" serve --listen "127.0.0.1:$2" --data-dir "$1" --ready-file "$1.ready" >"$1.log" 2>&1 &
  tw_pid=$!
  for _ in $(seq 600); do [ -s "$1.ready" ] && return; sleep 0.1; done
  echo "trailwatch did not start" >&2; exit 1
}

if [ -z "${SKIP_TRIVIAL:-}" ]; then
echo "## trivial call: STS GetCallerIdentity, 8 connections"
start_trailwatch "$work/trivial" 24601
"$target/trailwatch-bench" call --endpoint http://127.0.0.1:24601 --operation get-caller-identity \
  --connections 8 --requests 40000 --server-pid "$tw_pid" --label trailwatch
kill "$tw_pid"; wait "$tw_pid" || true
moto_server -H 127.0.0.1 -p 24602 >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:24602/ && break; sleep 0.1; done
"$target/trailwatch-bench" call --endpoint http://127.0.0.1:24602 --operation get-caller-identity \
  --connections 8 --requests 4000 --server-pid "$moto_pid" --label moto_server
kill "$moto_pid"
fi

echo "## LookupEvents first page over $records records"
if [ ! -e "$history/catalog.db" ]; then
  mkdir -p "$history"
  start_trailwatch "$history" 24603 && kill "$tw_pid" && wait "$tw_pid" || true
  /usr/bin/time -v "$target/trailwatch-bench" seed-audit --data-dir "$history" --records "$records" \
    --account "$TRAILWATCH_ACCOUNT_ID" 2> >(grep -E "seeded|Maximum resident|Elapsed" >&2)
fi
started=$(date +%s.%N)
start_trailwatch "$history" 24603
echo "{\"label\": \"trailwatch-startup\", \"seconds\": $(echo "$(date +%s.%N) - $started" | bc)}"
grep VmRSS "/proc/$tw_pid/status"
du -sh "$history/objects"
for attribute in "" EventName=CreateTrail EventName=DescribeAlarms Username=user-07 ResourceName=alarm-0042; do
  "$target/trailwatch-bench" call --endpoint http://127.0.0.1:24603 --operation lookup-events \
    ${attribute:+--attribute "$attribute"} --connections 1 --requests 300 --warmup 10 --server-pid "$tw_pid" --label trailwatch
done
kill "$tw_pid"; wait "$tw_pid" || true
python3 bench/duckdb_lookup.py "$history" --attribute none --attribute EventName=CreateTrail \
  --attribute EventName=DescribeAlarms --attribute Username=user-07 --attribute ResourceName=alarm-0042
