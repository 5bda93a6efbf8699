"""Breach-to-notification latency of trailwatch alarms (issue 5).

Starts the given trailwatch binary on 127.0.0.1, subscribes a local HTTP
receiver to a topic, and runs ALARMS high-resolution alarms (Period 10,
1 of 1, Maximum > 50) at once. Each alarm, ROUNDS times: waits a random
moment, puts a breaching value (boto3, StorageResolution 1), and times the
span from the start of that PutMetricData call to the arrival of its ALARM
notification at the receiver; then puts good values until the alarm is OK
again. Prints p50, p99 and max over every round of every alarm.
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

import boto3
from botocore.config import Config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--alarms", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--port", type=int, default=24643)
    args = parser.parse_args()

    os.makedirs(args.data_dir, exist_ok=True)
    ready = os.path.join(args.data_dir, "ready")
    server = subprocess.Popen(
        [args.binary, "serve", "--listen", f"127.0.0.1:{args.port}", "--data-dir", args.data_dir, "--ready-file", ready],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(args.data_dir, "log"), "w"),
        env={**os.environ, "TRAILWATCH_LOG": "warn"},
    )
    try:
        for _ in range(600):
            if os.path.exists(ready) and os.path.getsize(ready) > 0:
                break
            time.sleep(0.1)
        run(args)
    finally:
        server.terminate()
        server.wait()


def run(args):
    endpoint = f"http://127.0.0.1:{args.port}"
    session = boto3.session.Session(region_name="us-east-1")
    config = Config(max_pool_connections=args.alarms + 4, retries={"max_attempts": 1})
    sns = session.client("sns", endpoint_url=endpoint, config=config)
    cloudwatch = session.client("cloudwatch", endpoint_url=endpoint, config=config)

    inboxes = {f"lat-{i:02d}": queue.Queue() for i in range(args.alarms)}
    confirmations = queue.Queue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            arrived = time.time()
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
            if body["Type"] == "SubscriptionConfirmation":
                confirmations.put(body)
            else:
                message = json.loads(body["Message"])
                inboxes[message["AlarmName"]].put((arrived, message["NewStateValue"]))

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    topic = sns.create_topic(Name="latency")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=f"http://127.0.0.1:{httpd.server_address[1]}/")
    urllib.request.urlopen(confirmations.get(timeout=30)["SubscribeURL"], timeout=10).read()

    for name in inboxes:
        cloudwatch.put_metric_alarm(
            AlarmName=name, Namespace="Latency", MetricName=name, Statistic="Maximum", Period=10,
            EvaluationPeriods=1, Threshold=50.0, ComparisonOperator="GreaterThanThreshold",
            TreatMissingData="notBreaching", AlarmActions=[topic],
        )

    def put(name, value):
        cloudwatch.put_metric_data(
            Namespace="Latency", MetricData=[{"MetricName": name, "Value": value, "StorageResolution": 1}]
        )

    def state(name):
        return cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]

    samples = []
    lock = threading.Lock()

    def drive(name):
        rng = random.Random(name)
        for _ in range(args.rounds):
            while state(name) != "OK":
                time.sleep(1.0)
            time.sleep(rng.uniform(0, 10))
            started = time.time()
            put(name, 99.0)
            arrived, new_state = inboxes[name].get(timeout=60)
            assert new_state == "ALARM", new_state
            with lock:
                samples.append(arrived - started)
            while state(name) != "OK":
                put(name, 1.0)
                time.sleep(2.0)

    threads = [threading.Thread(target=drive, args=(name,)) for name in inboxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    httpd.shutdown()
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(round(0.99 * len(samples))) - 1)]
    print(
        f"trailwatch: {len(samples)} notifications, p50 {statistics.median(samples):.2f} s, "
        f"p99 {p99:.2f} s, max {samples[-1]:.2f} s (10-second alarms, evaluated when their bucket closes)"
    )


if __name__ == "__main__":
    main()
