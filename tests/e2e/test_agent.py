"""The host agent end to end: `trailwatch agent` (a real aws-sdk-rust client)
against the real server, read back with boto3.

Log lines go through a server outage (the agent starts first and buffers),
a rename rotation, an agent kill and restart, and a copytruncate; every line
must arrive exactly once and in order. Metric values are checked against
/proc read here, independently.
"""
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

from conftest import ACCESS_KEY, SECRET_KEY, REGION, Server, trailwatch_bin


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    def __init__(self, tmp_path, config, endpoint, args=()):
        self.args = list(args)
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
            [trailwatch_bin(), "agent", "--config", str(self.path), "--state-dir", str(self.state)]
            + self.args,
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
        # Swap in use, in bytes (0 on a host without swap).
        swap = cw.get_metric_data(MetricDataQueries=[{"Id": "s", "MetricStat": {"Metric": {
            "Namespace": "CWAgent", "MetricName": "swap_used", "Dimensions": dims}, "Period": 1,
            "Stat": "Maximum"}}], StartTime=end - 600, EndTime=end)["MetricDataResults"][0]["Values"]
        assert swap and abs(swap[0] - (m["SwapTotal"] - m["SwapFree"])) <= 0.05 * m["SwapTotal"], swap
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


class ThrottlingProxy:
    """Forwards requests to `upstream` unchanged (the signature covers the
    Host header, which is passed as it came), except that the first
    `throttle` PutLogEvents calls answer 400 ThrottlingException, as
    CloudWatch Logs does past its rate."""

    def __init__(self, upstream, throttle):
        self.upstream = upstream.split("//", 1)[1]
        self.left = throttle
        self.puts = []  # (time, answered status)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                put = self.headers.get("X-Amz-Target", "").endswith(".PutLogEvents")
                if put and proxy.left > 0:
                    proxy.left -= 1
                    proxy.puts.append((time.time(), 400))
                    reply = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
                    self.send_response(400)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                conn.putrequest("POST", self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    conn.putheader(k, v)
                conn.endheaders(body)
                resp = conn.getresponse()
                data = resp.read()
                if put:
                    proxy.puts.append((time.time(), resp.status))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_throttled_batches_back_off_and_arrive_once_in_order(tmp_path):
    srv = Server(str(tmp_path / "data"))
    srv.start()
    proxy = ThrottlingProxy(srv.endpoint, throttle=7)
    app = tmp_path / "app.log"
    write_lines(app, 1, 2000)
    config = {"logs": {"force_flush_interval": 1, "logs_collected": {"files": {"collect_list": [
        {"file_path": str(app), "log_group_name": "agent-throttle", "log_stream_name": "s"}]}}}}
    agent = Agent(tmp_path, config, proxy.endpoint)
    try:
        agent.start()
        logs = srv.client("logs")
        expected = [f"line {i:05d}" for i in range(1, 2001)]
        assert wait_for(lambda: len(stream_messages(logs, "agent-throttle", "s")) >= 2000)
        write_lines(app, 2001, 2100)
        expected += [f"line {i:05d}" for i in range(2001, 2101)]
        assert wait_for(lambda: len(stream_messages(logs, "agent-throttle", "s")) >= 2100)
        time.sleep(2)
        assert stream_messages(logs, "agent-throttle", "s") == expected
        statuses = [s for _, s in proxy.puts]
        assert statuses[:7] == [400] * 7 and 200 in statuses[7:], statuses
        # The SDK retries a throttled call itself (3 attempts); the agent then
        # waits 200 ms, 400 ms, ... before trying again: 7 refusals mean at
        # least two of the agent's pauses before the first success.
        first_ok = next(t for t, s in proxy.puts if s == 200)
        assert first_ok - proxy.puts[0][0] >= 0.6
        text = (tmp_path / "agent.log").read_text()
        assert "ThrottlingException" in text and "retrying" in text
    finally:
        agent.stop()
        proxy.close()
        srv.stop()
    bad = srv.unexpected_log_lines()
    assert not bad, "\n".join(bad)


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(path) for n in names)


def test_a_full_spool_pauses_reading_and_everything_arrives_later(tmp_path):
    port = free_port()
    srv = Server(str(tmp_path / "data"))
    app = tmp_path / "app.log"
    # 40,000 lines of ~200 bytes: 8 MB behind a 1 MiB spool.
    pad = "x" * 180
    with open(app, "w") as f:
        for i in range(1, 40001):
            f.write(f"line {i:05d} {pad}\n")
    config = {"logs": {"force_flush_interval": 1, "logs_collected": {"files": {"collect_list": [
        {"file_path": str(app), "log_group_name": "agent-spool", "log_stream_name": "s"}]}}}}
    agent = Agent(tmp_path, config, f"http://127.0.0.1:{port}", args=["--buffer-max-mb", "1"])
    spool = agent.state / "spool"
    try:
        agent.start()
        sizes = []
        for _ in range(20):
            time.sleep(0.25)
            sizes.append(dir_bytes(spool) if spool.exists() else 0)
        # Reading waits at the bound: at most one more read (1 MiB) past it.
        assert max(sizes) > 512 * 1024, sizes
        assert max(sizes) <= 2 * 1024 * 1024 + 64 * 1024, sizes
        state = json.loads((agent.state / "state.json").read_text())
        assert all(m["offset"] < os.path.getsize(app) for m in state["marks"])
        _start_on_port(srv, port)
        logs = srv.client("logs")
        expected = [f"line {i:05d} {pad}" for i in range(1, 40001)]
        assert wait_for(lambda: len(stream_messages(logs, "agent-spool", "s")) >= 40000, timeout=120)
        time.sleep(2)
        assert stream_messages(logs, "agent-spool", "s") == expected
    finally:
        agent.stop()
        srv.stop()
    bad = srv.unexpected_log_lines()
    assert not bad, "\n".join(bad)


def stream_events(logs, group, stream):
    page = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    return [(e["timestamp"], e["message"]) for e in page["events"]]


def test_multi_line_events_timestamps_and_encodings(tmp_path):
    srv = Server(str(tmp_path / "data"))
    srv.start()
    t1 = int(time.time()) - 3600
    fmt = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
    java = tmp_path / "java.log"
    java.write_text(
        f"{fmt(t1)} ERROR request failed\n"
        "  at com.example.A.run(A.java:10)\n"
        "  at com.example.B.call(B.java:20)\n"
        f"{fmt(t1 + 1)} INFO recovered\n"
        f"{fmt(t1 + 2)} WARN slow\n"
        "  took 1200 ms\n")
    texts = {"utf16": ("utf-16le", "grüße 1\n日本語 2\n"),
             "latin1": ("iso-8859-1", "café 3\nnaïve 4\n"),
             "gbk": ("gbk", "中文日志 5\n")}
    for name, (codec, text) in texts.items():
        (tmp_path / f"{name}.log").write_bytes(text.encode({"iso-8859-1": "latin-1"}.get(codec, codec)))
    files = [{"file_path": str(java), "log_group_name": "agent-formats", "log_stream_name": "java",
              "timestamp_format": "%Y-%m-%d %H:%M:%S", "timezone": "UTC",
              "multi_line_start_pattern": "{timestamp_format}"}]
    files += [{"file_path": str(tmp_path / f"{name}.log"), "log_group_name": "agent-formats",
               "log_stream_name": name, "encoding": codec} for name, (codec, _) in texts.items()]
    config = {"logs": {"force_flush_interval": 1, "logs_collected": {"files": {"collect_list": files}}},
              # Section-level append_dimensions: they replace the host dimension.
              "agent": {"metrics_collection_interval": 1},
              "metrics": {"append_dimensions": {"Team": "ops"},
                          "metrics_collected": {"mem": {"measurement": ["total"]}}}}
    agent = Agent(tmp_path, config, srv.endpoint)
    try:
        before = int(time.time() * 1000)
        agent.start()
        logs = srv.client("logs")
        assert wait_for(lambda: len(stream_events(logs, "agent-formats", "java")) >= 3)
        assert wait_for(lambda: all(stream_events(logs, "agent-formats", n) for n in texts))
        time.sleep(2)
        assert stream_events(logs, "agent-formats", "java") == [
            (t1 * 1000, f"{fmt(t1)} ERROR request failed\n  at com.example.A.run(A.java:10)\n"
                        "  at com.example.B.call(B.java:20)"),
            ((t1 + 1) * 1000, f"{fmt(t1 + 1)} INFO recovered"),
            ((t1 + 2) * 1000, f"{fmt(t1 + 2)} WARN slow\n  took 1200 ms"),
        ]
        after = int(time.time() * 1000)
        for name, (_, text) in texts.items():
            got = stream_events(logs, "agent-formats", name)
            assert [m for _, m in got] == text.splitlines()
            # No timestamp_format: the time the line was read.
            assert all(before <= t <= after for t, _ in got)
        cw = srv.client("cloudwatch")
        mem = cw.list_metrics(Namespace="CWAgent", MetricName="mem_total")["Metrics"]
        assert [m["Dimensions"] for m in mem] == [[{"Name": "Team", "Value": "ops"}]], mem
        res = cw.get_metric_data(MetricDataQueries=[{"Id": "t", "MetricStat": {"Metric": mem[0], "Period": 1,
                                                                             "Stat": "Maximum"}}],
                                 StartTime=time.time() - 600, EndTime=time.time() + 60)
        assert res["MetricDataResults"][0]["Values"][0] == meminfo()["MemTotal"]
    finally:
        agent.stop()
        srv.stop()
    bad = srv.unexpected_log_lines()
    assert not bad, "\n".join(bad)


def proc_net_dev(name):
    for line in open("/proc/net/dev").read().splitlines()[2:]:
        iface, rest = line.split(":", 1)
        if iface.strip() == name:
            cols = [int(c) for c in rest.split()]
            return {"bytes_recv": cols[0], "packets_recv": cols[1], "bytes_sent": cols[8], "packets_sent": cols[9]}
    raise KeyError(name)


def disk_of(path):
    """The /proc/diskstats name of the block device holding `path`."""
    st = os.stat(path)
    link = os.path.realpath(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    return os.path.basename(link)


def diskstats_written(name):
    for line in open("/proc/diskstats"):
        cols = line.split()
        if cols[2] == name:
            return int(cols[9]) * 512
    raise KeyError(name)


def listening_tcp():
    seen = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(f):
            for line in open(f).read().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A":
                    seen.add((cols[1], cols[2]))
    return len(seen)


def test_diskio_net_netstat_and_processes_match_proc(tmp_path):
    srv = Server(str(tmp_path / "data"))
    srv.start()
    disk = disk_of(tmp_path)
    config = {"agent": {"metrics_collection_interval": 1},
              "metrics": {"aggregation_dimensions": [["cpu"], []], "metrics_collected": {
                  "cpu": {"measurement": ["usage_idle"], "totalcpu": True, "resources": ["*"]},
                  "net": {"measurement": ["bytes_sent", "bytes_recv", "packets_recv"], "resources": ["lo"]},
                  "diskio": {"measurement": ["write_bytes", "writes"], "resources": [disk]},
                  "netstat": {"measurement": ["tcp_listen"]},
                  "processes": {"measurement": ["total"], "append_dimensions": {"Team": "ops"}}}}}
    agent = Agent(tmp_path, config, srv.endpoint)
    listeners = []
    try:
        lo0, written0 = proc_net_dev("lo"), diskstats_written(disk)
        agent.start()
        time.sleep(2.5)
        # Known work between collections: 20 MB over loopback, 16 MiB fsynced
        # to the disk, 10 more listening sockets.
        sink = socket.socket()
        sink.bind(("127.0.0.1", 0))
        sink.listen(1)
        out = socket.create_connection(sink.getsockname())
        conn, _ = sink.accept()
        chunk = b"z" * 65536
        reader = threading.Thread(target=_drain, args=(conn, 20_000_000))
        reader.start()
        for _ in range(20_000_000 // len(chunk) + 1):
            out.sendall(chunk)
        reader.join()
        with open(tmp_path / "blob", "wb") as f:
            f.write(os.urandom(16 << 20))
            f.flush()
            os.fsync(f.fileno())
        for _ in range(10):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            listeners.append(s)
        for s in (out, conn, sink):
            s.close()
        time.sleep(3.5)
        listen_now = listening_tcp()
        procs_now = sum(1 for n in os.listdir("/proc") if n.isdigit())
        time.sleep(1.5)
        agent.stop()
        lo1, written1 = proc_net_dev("lo"), diskstats_written(disk)
        cw = srv.client("cloudwatch")
        end = time.time() + 60

        # Deltas are summed; gauges averaged (two collections can share a
        # one-second bucket).
        def points(name, dims, stat="Sum"):
            res = cw.get_metric_data(MetricDataQueries=[{"Id": "m", "MetricStat": {"Metric": {
                "Namespace": "CWAgent", "MetricName": name,
                "Dimensions": [{"Name": "host", "Value": socket.gethostname()}] + dims},
                "Period": 1, "Stat": stat}}], StartTime=end - 600, EndTime=end, ScanBy="TimestampAscending")
            return res["MetricDataResults"][0]["Values"]

        lo = [{"Name": "interface", "Value": "lo"}]
        for field in ("bytes_recv", "bytes_sent"):
            total = sum(points("net_" + field, lo))
            # Every delta the agent sent lies inside our two reads; the 20 MB
            # sent between two collections is in them.
            assert 20_000_000 <= total <= lo1[field] - lo0[field], (field, total, lo1[field] - lo0[field])
        packets = sum(points("net_packets_recv", lo))
        assert 0 < packets <= lo1["packets_recv"] - lo0["packets_recv"]
        dev = [{"Name": "name", "Value": disk}]
        wrote = sum(points("diskio_write_bytes", dev))
        assert 16 << 20 <= wrote <= written1 - written0, (wrote, written1 - written0)
        assert sum(points("diskio_writes", dev)) > 0
        listen = points("netstat_tcp_listen", [], "Average")
        assert listen and abs(max(listen) - listen_now) <= 3, (listen, listen_now)
        total = points("processes_total", [{"Name": "Team", "Value": "ops"}], "Average")
        assert total and abs(total[-1] - procs_now) <= 15, (total, procs_now)
        # cpu per core and in total, and the aggregation roll-ups: by cpu
        # alone, and over everything.
        cores = {line.split()[0] for line in open("/proc/stat") if re.match(r"cpu\d+ ", line)}
        dims = {tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"]))
                for m in cw.list_metrics(Namespace="CWAgent", MetricName="cpu_usage_idle")["Metrics"]}
        host = ("host", socket.gethostname())
        want = {"cpu-total"} | cores
        assert {dict(d).get("cpu") for d in dims if host in d} == want, dims
        assert {dict(d)["cpu"] for d in dims if len(d) == 1 and d[0][0] == "cpu"} == want, dims
        assert () in dims, dims
        idle = points("cpu_usage_idle", [{"Name": "cpu", "Value": "cpu-total"}], "Average")
        assert idle and all(0 <= v <= 100 for v in idle)
    finally:
        agent.stop()
        for s in listeners:
            s.close()
        srv.stop()
    bad = srv.unexpected_log_lines()
    assert not bad, "\n".join(bad)


def _drain(conn, n):
    got = 0
    while got < n:
        data = conn.recv(1 << 20)
        if not data:
            return
        got += len(data)
