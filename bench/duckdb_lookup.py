#!/usr/bin/env python3
"""The DuckDB side of the LookupEvents benchmark: loads the management-event
segments of a trailwatch data directory into a native DuckDB table and times the
query each LookupEvents first page answers (newest 50 matching records).

Usage: duckdb_lookup.py DATA_DIR [--runs N] [--attribute Key=Value ...]
"""
import argparse
import json
import time

import duckdb

COLUMN = {
    "EventName": "event_name = ?",
    "Username": "username = ?",
    "AccessKeyId": "access_key_id = ?",
    "EventSource": "event_source = ?",
    "ResourceName": "resources LIKE ?",
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--attribute", action="append", default=[])
    args = parser.parse_args()
    con = duckdb.connect()
    began = time.time()
    con.execute(
        "CREATE TABLE events AS SELECT * FROM read_parquet(?, hive_partitioning = true)",
        [f"{args.data_dir}/objects/audit/category=Management/**/*.parquet"],
    )
    rows = con.execute("SELECT count(*) FROM events").fetchone()[0]
    print(json.dumps({"label": "duckdb-load", "rows": rows, "seconds": round(time.time() - began, 1)}))
    for attribute in args.attribute or ["none"]:
        if attribute == "none":
            where, params = "TRUE", []
        else:
            key, value = attribute.split("=", 1)
            where = COLUMN[key]
            params = [f'%"{value}"]%'] if key == "ResourceName" else [value]
        sql = f"SELECT record FROM events WHERE {where} ORDER BY event_time_ms DESC, event_id DESC LIMIT 50"
        latencies = []
        for i in range(args.runs + 10):
            t = time.perf_counter()
            result = con.execute(sql, params).fetchall()
            if i >= 10:
                latencies.append((time.perf_counter() - t) * 1000)
        latencies.sort()
        pct = lambda p: latencies[max(0, min(len(latencies), int(-(-p * len(latencies) // 100))) - 1)]
        print(json.dumps({
            "label": "duckdb", "attribute": attribute, "rows_returned": len(result),
            "p50_ms": round(pct(50), 3), "p99_ms": round(pct(99), 3), "max_ms": round(latencies[-1], 3),
        }))


if __name__ == "__main__":
    main()
