"""The peer of bench/alarm_latency.py: Prometheus alerting rules evaluated
every 10 seconds (like trailwatch's high-resolution alarms), notifying
through Alertmanager's webhook with no group wait.

A local exporter serves one gauge per alarm and is scraped every second.
Each alarm, ROUNDS times: waits a random moment, sets its gauge above the
threshold, and times the span from that change to the arrival of its firing
notification at a local receiver; then lowers the gauge and waits until the
alert is gone. Prints p50, p99 and max.
"""
import argparse
import http.server
import json
import os
import queue
import random
import statistics
import subprocess
import threading
import time
import urllib.request


def serve(handler_class):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--alarms", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prometheus-port", type=int, default=24644)
    parser.add_argument("--alertmanager-port", type=int, default=24645)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)

    names = [f"lat-{i:02d}" for i in range(args.alarms)]
    values = {n: 1.0 for n in names}
    inboxes = {n: queue.Queue() for n in names}

    class Exporter(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = "".join(f'bench_latency{{alarm="{n}"}} {v}\n' for n, v in values.items()).encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain; version=0.0.4")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    class Webhook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            arrived = time.time()
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
            for alert in body.get("alerts", []):
                if alert["status"] == "firing":
                    inboxes[alert["labels"]["alarm"]].put(arrived)

        def log_message(self, *a):
            pass

    exporter = serve(Exporter)
    webhook = serve(Webhook)
    w = args.work
    with open(f"{w}/rules.yml", "w") as f:
        f.write("groups:\n- name: latency\n  interval: 10s\n  rules:\n"
                "  - alert: LatencyHigh\n    expr: bench_latency > 50\n")
    with open(f"{w}/prometheus.yml", "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 10s
rule_files: ["{w}/rules.yml"]
alerting:
  alertmanagers:
  - static_configs: [{{targets: ["127.0.0.1:{args.alertmanager_port}"]}}]
scrape_configs:
- job_name: exporter
  static_configs: [{{targets: ["127.0.0.1:{exporter.server_address[1]}"]}}]
""")
    with open(f"{w}/alertmanager.yml", "w") as f:
        f.write(f"""route:
  receiver: web
  group_by: [alarm]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
- name: web
  webhook_configs:
  - url: http://127.0.0.1:{webhook.server_address[1]}/
    send_resolved: false
""")
    log = open(f"{w}/peers.log", "w")
    alertmanager = subprocess.Popen(
        ["prometheus-alertmanager", f"--config.file={w}/alertmanager.yml", f"--storage.path={w}/am",
         f"--web.listen-address=127.0.0.1:{args.alertmanager_port}", "--cluster.listen-address=", "--log.level=warn"],
        stdout=log, stderr=log)
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={w}/prometheus.yml", f"--storage.tsdb.path={w}/prom",
         f"--web.listen-address=127.0.0.1:{args.prometheus_port}", "--log.level=warn"],
        stdout=log, stderr=log)
    try:
        time.sleep(5)
        run(args, names, values, inboxes)
    finally:
        for p in (prometheus, alertmanager):
            p.terminate()
            p.wait()


def firing(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=10) as r:
        return {a["labels"]["alarm"] for a in json.load(r)["data"]["alerts"]}


def run(args, names, values, inboxes):
    samples = []
    lock = threading.Lock()

    def drive(name):
        rng = random.Random(name)
        for _ in range(args.rounds):
            while name in firing(args.prometheus_port):
                time.sleep(1.0)
            time.sleep(rng.uniform(0, 10))
            started = time.time()
            values[name] = 99.0
            arrived = inboxes[name].get(timeout=120)
            with lock:
                samples.append(arrived - started)
            values[name] = 1.0
            while name in firing(args.prometheus_port):
                time.sleep(1.0)

    threads = [threading.Thread(target=drive, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(round(0.99 * len(samples))) - 1)]
    print(
        f"prometheus + alertmanager: {len(samples)} notifications, p50 {statistics.median(samples):.2f} s, "
        f"p99 {p99:.2f} s, max {samples[-1]:.2f} s (rules every 10 s, scrape every 1 s, no group wait)"
    )


if __name__ == "__main__":
    main()
