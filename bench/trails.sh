#!/usr/bin/env bash
# Trail benchmarks of issue #6, side by side in one run (docs/BENCHMARKS.md):
#  1. records per second sustained with delivery and digests on: the same
#     signed call (STS GetCallerIdentity, a management read every trail logs)
#     against trailwatch with a logging, validating trail, against trailwatch
#     without trails, and against moto_server; then the delivered files are
#     counted: every call made must be in exactly one file;
#  2. `aws cloudtrail validate-logs` beside `trailwatch trail verify` over one
#     day of files (288 log files, 24 signed digests).
# Needs: release builds of trailwatch and trailwatch-bench; moto_server and
# the aws CLI (awscli 1.x) on PATH. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
requests="${REQUESTS:-200000}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=AKIABENCH00000000001 AWS_SECRET_ACCESS_KEY=bench-secret-0000000000000000000000000000
export TRAILWATCH_ROOT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID TRAILWATCH_ROOT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export TRAILWATCH_ACCOUNT_ID=123456789012 TRAILWATCH_LOG=warn AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
account=$TRAILWATCH_ACCOUNT_ID

start_trailwatch() { # data dir, port, extra args...
  local dir=$1 port=$2; shift 2
  rm -f "$dir.ready"
  "$target/trailwatch" serve --listen "127.0.0.1:$port" --data-dir "$dir" --ready-file "$dir.ready" "$@" >"$dir.log" 2>&1 &
  tw_pid=$!
  for _ in $(seq 600); do [ -s "$dir.ready" ] && return; sleep 0.1; done
  echo "trailwatch did not start" >&2; exit 1
}

count_records() { # data dir, bucket
  python3 - "$1/objects/buckets/$2" <<'EOF'
import gzip, json, os, sys
records, files, ids = 0, 0, set()
for root, _, names in os.walk(sys.argv[1]):
    for n in names:
        if "_CloudTrail_" in n and n.endswith(".json.gz"):
            doc = json.loads(gzip.decompress(open(os.path.join(root, n), "rb").read()))
            files += 1
            records += len(doc["Records"])
            ids.update(r["eventID"] for r in doc["Records"])
print(json.dumps({"log_files": files, "records": records, "distinct_event_ids": len(ids)}))
EOF
}

echo "## 1. GetCallerIdentity, 8 connections, $requests calls"
start_trailwatch "$work/on" 24611 --trail-delivery-secs 10 --digest-interval-secs 10
export AWS_ENDPOINT_URL=http://127.0.0.1:24611
aws s3api create-bucket --bucket bench-trail >/dev/null
aws cloudtrail create-trail --name bench --s3-bucket-name bench-trail --enable-log-file-validation >/dev/null
aws cloudtrail start-logging --name bench
"$target/trailwatch-bench" call --endpoint http://127.0.0.1:24611 --operation get-caller-identity \
  --connections 8 --requests "$requests" --server-pid "$tw_pid" --label "trailwatch, trail logging"
sent=$((requests + 8 * 50))
started=$(date +%s)
for _ in $(seq 120); do
  delivered=$(count_records "$work/on" bench-trail | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')
  [ "$delivered" -ge "$sent" ] && break
  sleep 1
done
echo "{\"label\": \"delivered after the run\", \"seconds\": $(( $(date +%s) - started )), \"calls_sent\": $sent}"
count_records "$work/on" bench-trail
aws cloudtrail get-trail-status --name bench --query '{delivery: LatestDeliveryTime, digest: LatestDigestDeliveryTime, error: LatestDeliveryError}'
unset AWS_ENDPOINT_URL
kill "$tw_pid"; wait "$tw_pid" || true

start_trailwatch "$work/off" 24612
"$target/trailwatch-bench" call --endpoint http://127.0.0.1:24612 --operation get-caller-identity \
  --connections 8 --requests "$requests" --server-pid "$tw_pid" --label "trailwatch, no trail"
kill "$tw_pid"; wait "$tw_pid" || true

moto_server -H 127.0.0.1 -p 24613 >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:24613/ && break; sleep 0.1; done
"$target/trailwatch-bench" call --endpoint http://127.0.0.1:24613 --operation get-caller-identity \
  --connections 8 --requests 4000 --server-pid "$moto_pid" --label moto_server
kill "$moto_pid"

echo "## 2. validate-logs and trail verify over one day of files"
day="$work/day"
start_trailwatch "$day" 24614 && kill "$tw_pid" && wait "$tw_pid" || true
"$target/trailwatch-bench" seed-trail --data-dir "$day" --account "$account" --bucket bench-trail \
  --prefix bench --trail bench --hours 24 --files-per-hour 12 --records-per-file 200
start_trailwatch "$day" 24614
du -sh "$day/objects/buckets/bench-trail"
arn="arn:aws:cloudtrail:us-east-1:$account:trail/bench"
from=$(date -u -d '-25 hours' +%Y-%m-%dT%H:%M:%SZ)
for run in 1 2 3; do
  t0=$(date +%s.%N)
  AWS_ENDPOINT_URL=http://127.0.0.1:24614 aws cloudtrail validate-logs --trail-arn "$arn" \
    --s3-bucket bench-trail --s3-prefix bench --start-time "$from" >"$work/validate.out" 2>&1 \
    || { cat "$work/validate.out"; exit 1; }
  t1=$(date +%s.%N)
  AWS_ENDPOINT_URL=http://127.0.0.1:24614 "$target/trailwatch" trail verify --trail-arn "$arn" \
    --s3-bucket bench-trail --s3-prefix bench --start-time "$from" >"$work/verify.out" 2>&1 \
    || { cat "$work/verify.out"; exit 1; }
  t2=$(date +%s.%N)
  echo "{\"run\": $run, \"validate_logs_s\": $(echo "$t1 - $t0" | bc), \"trail_verify_s\": $(echo "$t2 - $t1" | bc)}"
done
grep -E "valid" "$work/validate.out" | tail -2
grep -E "valid|chain" "$work/verify.out"
kill "$tw_pid"; wait "$tw_pid" || true
