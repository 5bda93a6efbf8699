#!/usr/bin/env bash
# Logs benchmarks of issue #4, side by side in one run (docs/BENCHMARKS.md):
#  1. PutLogEvents ingest of ~1 KB events, as many per request as the
#     1,048,576-byte batch limit allows (990), WAL fsynced before each
#     answer, beside moto_server.
# Needs: release builds of trailwatch and trailwatch-bench, moto_server on
# PATH. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=AKIABENCH00000000001 AWS_SECRET_ACCESS_KEY=bench-secret-0000000000000000000000000000
export TRAILWATCH_ROOT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID TRAILWATCH_ROOT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export TRAILWATCH_ACCOUNT_ID=123456789012 TRAILWATCH_LOG=warn
bench="$target/trailwatch-bench"

echo "## PutLogEvents: 990 events of ~1 KB per request, 4 connections"
for round in 1 2; do
  rm -f "$work/tw-$round.ready"
  "$target/trailwatch" serve --listen 127.0.0.1:24650 --data-dir "$work/tw-$round" \
    --ready-file "$work/tw-$round.ready" >"$work/tw-$round.log" 2>&1 &
  tw_pid=$!
  for _ in $(seq 600); do [ -s "$work/tw-$round.ready" ] && break; sleep 0.1; done
  "$bench" call --endpoint http://127.0.0.1:24650 --operation put-log-events --values 990 --bodies 32 \
    --connections 4 --requests 1000 --warmup 2 --server-pid "$tw_pid" --label trailwatch
  kill "$tw_pid"; wait "$tw_pid" || true
done
moto_server -H 127.0.0.1 -p 24651 >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:24651/ && break; sleep 0.1; done
"$bench" call --endpoint http://127.0.0.1:24651 --operation put-log-events --values 990 --bodies 8 \
  --connections 4 --requests 40 --warmup 1 --server-pid "$moto_pid" --label moto_server
kill "$moto_pid"
