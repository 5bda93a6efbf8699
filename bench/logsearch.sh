#!/usr/bin/env bash
# Log search benchmarks of issue #4, side by side in one run (docs/BENCHMARKS.md):
#  1. FilterLogEvents of a rare literal and of a common one (1 % of events),
#     every page fetched, beside ripgrep over the same raw text;
#  2. Logs Insights `stats count(*) by bin(5m)` and
#     `filter status >= 500 | stats avg(latency_ms) by service`, beside DuckDB
#     over the same events (timestamp, message) with its JSON functions.
# The events (seeded JSON application logs, EVENTS of about EVENT_BYTES) are
# loaded once through PutLogEvents; the server is then restarted, so every
# read comes from segment blocks on disk (warm page cache, as for ripgrep).
# Needs: release builds of trailwatch and trailwatch-bench, ripgrep, and
# python3 with duckdb (DUCKDB_PYTHON, default python3). Listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
events="${EVENTS:-10000000}"
event_bytes="${EVENT_BYTES:-500}"
python="${DUCKDB_PYTHON:-python3}"
work="$(mktemp -d "${BENCH_DIR:-/tmp}/trailwatch-logsearch.XXXXXX")"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=AKIABENCH00000000001 AWS_SECRET_ACCESS_KEY=bench-secret-0000000000000000000000000000
export TRAILWATCH_ROOT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID TRAILWATCH_ROOT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export TRAILWATCH_ACCOUNT_ID=123456789012 TRAILWATCH_LOG=warn
bench="$target/trailwatch-bench"
endpoint=http://127.0.0.1:24660
for bin in "$target/trailwatch" "$bench"; do
  [ -x "$bin" ] || { echo "missing $bin: cargo build --release -p trailwatch -p trailwatch-bench"; exit 1; }
done

start_server() {
  rm -f "$work/ready"
  "$target/trailwatch" serve --listen 127.0.0.1:24660 --data-dir "$work/data" \
    --ready-file "$work/ready" >>"$work/server.log" 2>&1 &
  tw_pid=$!
  for _ in $(seq 3000); do [ -s "$work/ready" ] && break; sleep 0.1; done
  [ -s "$work/ready" ] || { echo "server did not start"; cat "$work/server.log"; exit 1; }
}

# Median wall time of 3 runs (after one untimed) of a command, in seconds.
median_time() {
  "$@" >/dev/null
  local times=()
  for _ in 1 2 3; do
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    times+=("$(awk "BEGIN { print $t1 - $t0 }")")
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n 2p
}

echo "## loading $events events of ~$event_bytes bytes"
start_server
"$bench" logs-load --endpoint "$endpoint" --events "$events" --event-bytes "$event_bytes" \
  --raw-out "$work/raw.tsv"
# A graceful stop flushes every event into segments; the restart reads
# only block directories, so the queries below read blocks from disk.
kill "$tw_pid"; wait "$tw_pid" || true
start_server
raw_bytes=$(stat -c %s "$work/raw.tsv")
echo "raw text: $raw_bytes bytes; stored: $(du -sb "$work/data" | cut -f1) bytes"
cat "$work/raw.tsv" >/dev/null

for term in OutOfMemoryError ERROR; do
  echo "## FilterLogEvents '$term' vs ripgrep"
  echo "ripgrep: $(rg -c "$term" "$work/raw.tsv") lines; median $(median_time rg "$term" "$work/raw.tsv") s of 3 runs"
  "$bench" logs-query --endpoint "$endpoint" --pattern "$term" --raw-bytes "$raw_bytes"
done

echo "## Logs Insights vs DuckDB"
"$python" - "$work/raw.tsv" "$work/events.duckdb" <<'EOF'
import sys, time
import duckdb
raw, path = sys.argv[1], sys.argv[2]
db = duckdb.connect(path)
db.execute(f"""CREATE TABLE events AS SELECT * FROM read_csv('{raw}', delim='\t', header=false,
  quote='', escape='', columns={{'ts': 'BIGINT', 'message': 'VARCHAR'}})""")
print("duckdb", duckdb.__version__, "threads", db.execute("SELECT current_setting('threads')").fetchone()[0],
      "rows", db.execute("SELECT count(*) FROM events").fetchone()[0])
queries = {
    "stats count(*) by bin(5m)":
        "SELECT time_bucket(INTERVAL '5 minutes', epoch_ms(ts)) AS b, count(*) FROM events GROUP BY b ORDER BY b",
    "filter status >= 500 | stats avg(latency_ms) by service":
        "SELECT json_extract_string(message, '$.service') AS s, avg(CAST(json_extract(message, '$.latency_ms') AS DOUBLE)) "
        "FROM events WHERE CAST(json_extract(message, '$.status') AS INTEGER) >= 500 GROUP BY s ORDER BY s",
}
for name, sql in queries.items():
    rows = db.execute(sql).fetchall()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        db.execute(sql).fetchall()
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"duckdb: {name}: {len(rows)} rows; median {times[1]:.3f} s of 3 runs (min {times[0]:.3f}, max {times[2]:.3f})")
EOF
for q in 'stats count(*) by bin(5m)' 'filter status >= 500 | stats avg(latency_ms) by service'; do
  "$bench" logs-query --endpoint "$endpoint" --insights "$q" --label "trailwatch: $q"
done
kill "$tw_pid"; wait "$tw_pid" || true
if grep -E "WARN|ERROR" "$work/server.log"; then echo "server logged warnings or errors"; exit 1; fi
