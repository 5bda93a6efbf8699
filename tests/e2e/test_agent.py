"""The host agent end to end: `trailwatch agent` (a real aws-sdk-rust client)
against the real server, read back with boto3.

Log lines go through a server outage (the agent starts first and buffers),
a rename rotation, an agent kill and restart, and a copytruncate; every line
must arrive exactly once and in order. Metric values are checked against
/proc read here, independently.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import time

from conftest import ACCESS_KEY, SECRET_KEY, REGION, Server, trailwatch_bin


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    def __init__(self, tmp_path, config, endpoint):
        self.path = tmp_path / "agent.json"
        self.path.write_text(json.dumps(config))
        self.state = tmp_path / "agent-state"
        self.log = open(tmp_path / "agent.log", "ab")
        self.endpoint = endpoint
        self.proc = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "TRAILWATCH_LOG": "info",
        })
        self.proc = subprocess.Popen(
            [trailwatch_bin(), "agent", "--config", str(self.path), "--state-dir", str(self.state)],
            stdout=self.log, stderr=self.log, env=env)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)


def stream_messages(logs, group, stream):
    out, token = [], None
    while True:
        kw = dict(logGroupName=group, logStreamName=stream, startFromHead=True)
        if token:
            kw["nextToken"] = token
        page = logs.get_log_events(**kw)
        out += [e["message"] for e in page["events"]]
        if page["nextForwardToken"] == token:
            return out
        token = page["nextForwardToken"]


def wait_for(predicate, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return True
        except Exception:  # the server may be starting
            pass
        time.sleep(0.5)
    return False


def write_lines(path, first, last):
    with open(path, "a") as f:
        for i in range(first, last + 1):
            f.write(f"line {i:05d}\n")


def test_log_lines_survive_outage_rotation_restart_and_copytruncate(tmp_path):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    app = logdir / "app.log"
    port = free_port()
    srv = Server(str(tmp_path / "data"))
    endpoint = f"http://127.0.0.1:{port}"
    config = {
        "agent": {"metrics_collection_interval": 60},
        "logs": {"force_flush_interval": 1, "logs_collected": {"files": {"collect_list": [
            {"file_path": str(logdir / "app.log*"), "log_group_name": "agent-e2e",
             "log_stream_name": "{hostname}-app", "retention_in_days": 7}]}}},
    }
    agent = Agent(tmp_path, config, endpoint)
    stream = socket.gethostname() + "-app"
    expected = []
    try:
        # Outage: the server is not up yet; the agent reads and buffers.
        write_lines(app, 1, 3000)
        agent.start()
        time.sleep(3)
        # Rename rotation while the server is still down.
        os.rename(app, logdir / "app.log.1")
        write_lines(app, 3001, 4000)
        time.sleep(2)
        _start_on_port(srv, port)
        logs = srv.client("logs")
        expected = [f"line {i:05d}" for i in range(1, 4001)]
        assert wait_for(lambda: len(stream_messages(logs, "agent-e2e", stream)) >= 4000)
        # Agent killed (no chance to save), lines written while it is down.
        agent.stop(signal.SIGKILL)
        write_lines(app, 4001, 5000)
        agent.start()
        expected = [f"line {i:05d}" for i in range(1, 5001)]
        assert wait_for(lambda: len(stream_messages(logs, "agent-e2e", stream)) >= 5000)
        # copytruncate once the agent has read the file.
        shutil.copy(app, logdir / "copied.bak")
        with open(app, "r+") as f:
            f.truncate(0)
        write_lines(app, 5001, 5500)
        expected = [f"line {i:05d}" for i in range(1, 5501)]
        assert wait_for(lambda: len(stream_messages(logs, "agent-e2e", stream)) >= 5500)
        time.sleep(3)
        assert stream_messages(logs, "agent-e2e", stream) == expected
        group = logs.describe_log_groups(logGroupNamePrefix="agent-e2e")["logGroups"][0]
        assert group["retentionInDays"] == 7
    finally:
        agent.stop()
        srv.stop()
    bad = srv.unexpected_log_lines()
    assert not bad, "\n".join(bad)


def _start_on_port(srv, port):
    """Starts `srv` on a fixed port (the agent was told it before the server ran)."""
    ready = os.path.join(os.path.dirname(srv.data_dir), "ready-" + os.path.basename(srv.data_dir))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAILWATCH_ROOT_")}
    env.update({
        "TRAILWATCH_LOG": "info",
        "TRAILWATCH_NO_HOST_AGENT": "true",
        "TRAILWATCH_ROOT_ACCESS_KEY_ID": ACCESS_KEY,
        "TRAILWATCH_ROOT_SECRET_ACCESS_KEY": SECRET_KEY,
        "TRAILWATCH_ACCOUNT_ID": "111122223333",
    })
    log = open(srv.log_path, "ab")
    srv.proc = subprocess.Popen(
        [trailwatch_bin(), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", srv.data_dir,
         "--ready-file", ready], stdout=log, stderr=log, env=env)
    assert wait_for(lambda: os.path.exists(ready) and open(ready).read().strip(), timeout=30)
    srv.endpoint = f"http://127.0.0.1:{port}"


def meminfo():
    out = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":")
        out[k] = int(v.split()[0]) * 1024
    return out


def test_serve_runs_a_host_agent_whose_values_match_proc(tmp_path):
    srv = Server(str(tmp_path / "data"), extra_env={
        "TRAILWATCH_NO_HOST_AGENT": "false",
        "TRAILWATCH_HOST_AGENT_INTERVAL_SECS": "2",
    })
    srv.start()
    try:
        cw = srv.client("cloudwatch")
        names = lambda: {m["MetricName"] for m in cw.list_metrics(Namespace="CWAgent")["Metrics"]}
        assert wait_for(lambda: {"cpu_usage_idle", "mem_used_percent", "mem_total", "disk_used_percent"} <= names())
        host = socket.gethostname()
        dims = [{"Name": "host", "Value": host}]
        end = time.time() + 60
        res = cw.get_metric_data(MetricDataQueries=[
            {"Id": "total", "MetricStat": {"Metric": {"Namespace": "CWAgent", "MetricName": "mem_total",
                                                      "Dimensions": dims}, "Period": 1, "Stat": "Maximum"}},
            {"Id": "used", "MetricStat": {"Metric": {"Namespace": "CWAgent", "MetricName": "mem_used_percent",
                                                     "Dimensions": dims}, "Period": 1, "Stat": "Average"}},
            {"Id": "idle", "MetricStat": {"Metric": {"Namespace": "CWAgent", "MetricName": "cpu_usage_idle",
                                                     "Dimensions": dims + [{"Name": "cpu", "Value": "cpu-total"}]},
                                          "Period": 1, "Stat": "Average"}},
        ], StartTime=end - 600, EndTime=end)
        got = {r["Id"]: r["Values"] for r in res["MetricDataResults"]}
        m = meminfo()
        # MemTotal does not change: exact.
        assert got["total"] and got["total"][0] == m["MemTotal"]
        # Used memory moves a little between the agent's read and ours.
        used = (m["MemTotal"] - m["MemFree"] - m["Buffers"] - m["Cached"] - m.get("SReclaimable", 0)) / m["MemTotal"] * 100
        assert got["used"] and abs(got["used"][0] - used) < 5
        assert got["idle"] and all(0 <= v <= 100 for v in got["idle"])
        # The root file system's size, from statvfs here.
        st = os.statvfs("/")
        disk = cw.get_metric_data(MetricDataQueries=[{"Id": "t", "Expression":
            "SEARCH('{CWAgent,device,fstype,host,path} MetricName=\"disk_total\" path=\"/\"', 'Maximum', 1)"}],
            StartTime=end - 600, EndTime=end)["MetricDataResults"]
        assert disk and disk[0]["Values"] and disk[0]["Values"][0] == st.f_blocks * st.f_frsize
    finally:
        srv.stop()
    bad = srv.unexpected_log_lines()
    assert not bad, "\n".join(bad)
