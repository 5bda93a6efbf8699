"""CloudWatch metrics end to end: PutMetricData and ListMetrics in all three
protocols, the aws CLI, validation errors and persistence across a restart."""
import datetime
import os
import time
import json

import pytest
from botocore.exceptions import ClientError

from conftest import Server

CLOUDWATCH_PROTOCOLS = ["smithy-rpc-v2-cbor", "json", "query"]


def list_all(cw, **kwargs):
    metrics = []
    for page in cw.get_paginator("list_metrics").paginate(**kwargs):
        metrics.extend(page["Metrics"])
    return metrics


def key(metric):
    dims = ",".join(f"{d['Name']}={d['Value']}" for d in metric["Dimensions"])
    return f"{metric['Namespace']}/{metric['MetricName']}:{dims}"


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_put_then_list(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    now = datetime.datetime.now(datetime.timezone.utc)
    cw.put_metric_data(
        Namespace="App/Web",
        MetricData=[
            {"MetricName": "Latency", "Dimensions": [{"Name": "Svc", "Value": "a"}], "Value": 12.5, "Unit": "Milliseconds", "Timestamp": now},
            {
                "MetricName": "Latency",
                "Dimensions": [{"Name": "Svc", "Value": "b"}, {"Name": "Region", "Value": "x"}],
                "StatisticValues": {"SampleCount": 4, "Sum": 10, "Minimum": 1, "Maximum": 4},
                "StorageResolution": 1,
            },
            {"MetricName": "Errors", "Values": [1.0, 2.0], "Counts": [3.0, 4.0]},
        ],
    )
    # The same identity with its dimensions in another order is the same metric.
    cw.put_metric_data(Namespace="App/Web", MetricData=[
        {"MetricName": "Latency", "Dimensions": [{"Name": "Region", "Value": "x"}, {"Name": "Svc", "Value": "b"}], "Value": 1}
    ])
    assert [key(m) for m in list_all(cw, Namespace="App/Web")] == [
        "App/Web/Errors:",
        "App/Web/Latency:Region=x,Svc=b",
        "App/Web/Latency:Svc=a",
    ]
    assert [key(m) for m in list_all(cw, Namespace="App/Web", Dimensions=[{"Name": "Svc", "Value": "b"}])] == [
        "App/Web/Latency:Region=x,Svc=b"
    ]
    assert len(list_all(cw, Dimensions=[{"Name": "Svc"}])) == 2
    assert list_all(cw, MetricName="latency") == []
    assert len(list_all(cw, RecentlyActive="PT3H")) == 3


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_validation_errors_reach_the_client_as_modelled_exceptions(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)

    def failure(**kwargs):
        with pytest.raises(ClientError) as info:
            cw.put_metric_data(**kwargs)
        return info.value

    e = failure(Namespace="AWS/EC2", MetricData=[{"MetricName": "X", "Value": 1}])
    assert isinstance(e, cw.exceptions.InvalidParameterValueException)
    assert e.response["Error"]["Code"] == "InvalidParameterValue"
    assert e.response["Error"]["Message"] == "The value AWS/ for parameter Namespace is invalid."
    e = failure(Namespace="App", MetricData=[{"MetricName": "X", "Value": 1, "StatisticValues": {"SampleCount": 1, "Sum": 1, "Minimum": 1, "Maximum": 1}}])
    assert isinstance(e, cw.exceptions.InvalidParameterCombinationException)
    e = failure(Namespace="App", MetricData=[{"MetricName": "X", "Values": [1, 2], "Counts": [1]}])
    assert e.response["Error"]["Message"] == "The parameters MetricData.member.1.Values and MetricData.member.1.Counts must be of the same size."
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=15)
    e = failure(Namespace="App", MetricData=[{"MetricName": "X", "Value": 1, "Timestamp": old}])
    assert "within the past two weeks" in e.response["Error"]["Message"]
    e = failure(Namespace="App", MetricData=[{"MetricName": "X", "Value": 1, "StorageResolution": 30}])
    assert e.response["Error"]["Code"] == "InvalidParameterValue"
    # All-or-nothing: nothing of a failed request was stored.
    failure(Namespace="App", MetricData=[{"MetricName": "Good", "Value": 1}, {"MetricName": "Bad", "Value": 1, "Unit": "Furlongs"}])
    assert list_all(cw, Namespace="App") == []


def test_cli_and_restart(tmp_path):
    srv = Server(str(tmp_path / "data"))
    srv.start()
    try:
        srv.cli("cloudwatch", "put-metric-data", "--namespace", "Host", "--metric-name", "CPUUtilization",
                "--dimensions", "InstanceId=i-1", "--value", "42.5", "--unit", "Percent")
        out = json.loads(srv.cli("cloudwatch", "list-metrics", "--namespace", "Host").stdout)
        assert out["Metrics"] == [{"Namespace": "Host", "MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": "i-1"}]}]
    finally:
        assert srv.stop() == 0
    srv.start()
    try:
        out = json.loads(srv.cli("cloudwatch", "list-metrics").stdout)
        assert [m["MetricName"] for m in out["Metrics"]] == ["CPUUtilization"]
    finally:
        srv.stop()


def minute_ago(minutes):
    now = datetime.datetime.now(datetime.timezone.utc).replace(second=0, microsecond=0)
    return now - datetime.timedelta(minutes=minutes)


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_get_metric_statistics_exact_values(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    t0 = minute_ago(10)
    dims = [{"Name": "Page", "Value": "home"}]
    cw.put_metric_data(Namespace="App", MetricData=[
        {"MetricName": "PageViewCount", "Dimensions": dims, "Value": v, "Timestamp": t0 + datetime.timedelta(seconds=s), "StorageResolution": 1}
        for s, v in [(0, 2.0), (1, 4.0), (2, 5.0)]
    ] + [
        {"MetricName": "PageViewCount", "Dimensions": dims, "Values": [10.0, 20.0], "Counts": [3.0, 1.0], "Timestamp": t0 + datetime.timedelta(minutes=1)},
    ])
    out = cw.get_metric_statistics(
        Namespace="App", MetricName="PageViewCount", Dimensions=dims,
        StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=5), Period=60,
        Statistics=["Sum", "Maximum", "Minimum", "Average", "SampleCount"],
    )
    assert out["Label"] == "PageViewCount"
    points = sorted(out["Datapoints"], key=lambda p: p["Timestamp"])
    assert [p["Timestamp"] for p in points] == [t0, t0 + datetime.timedelta(minutes=1)]
    assert {k: points[0][k] for k in ("SampleCount", "Average", "Maximum", "Minimum", "Sum", "Unit")} == {
        "SampleCount": 3.0, "Average": 3.6666666666666665, "Maximum": 5.0, "Minimum": 2.0, "Sum": 11.0, "Unit": "None",
    }
    assert (points[1]["SampleCount"], points[1]["Sum"]) == (4.0, 50.0)
    ext = cw.get_metric_statistics(
        Namespace="App", MetricName="PageViewCount", Dimensions=dims,
        StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=5), Period=300,
        ExtendedStatistics=["p50", "p99", "TM(1:4)", "PR(:5)"],
    )["Datapoints"]
    assert len(ext) == 1
    # Samples 2, 4, 5, 10, 10, 10, 20 (n = 7).
    assert ext[0]["ExtendedStatistics"] == {"p50": 10.0, "p99": 20.0, "TM(1:4)": 3.0, "PR(:5)": 300 / 7}
    # Exact dimension sets only, unit filters, and periods that do not fit the data's age.
    assert cw.get_metric_statistics(Namespace="App", MetricName="PageViewCount", StartTime=t0,
                                    EndTime=t0 + datetime.timedelta(minutes=5), Period=60, Statistics=["Sum"])["Datapoints"] == []
    assert cw.get_metric_statistics(Namespace="App", MetricName="PageViewCount", Dimensions=dims, StartTime=t0,
                                    EndTime=t0 + datetime.timedelta(minutes=5), Period=60, Statistics=["Sum"], Unit="Count")["Datapoints"] == []
    with pytest.raises(ClientError) as info:
        cw.get_metric_statistics(Namespace="App", MetricName="PageViewCount", StartTime=t0 - datetime.timedelta(days=2),
                                 EndTime=t0, Period=60, Statistics=["Sum"])
    assert isinstance(info.value, cw.exceptions.InvalidParameterCombinationException)
    assert "exceeds the limit of 1,440" in info.value.response["Error"]["Message"]


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_get_metric_data_metric_stat_queries_and_paging(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    t0 = minute_ago(20)
    cw.put_metric_data(Namespace="App", MetricData=[
        {"MetricName": "Requests", "Value": float(v), "Timestamp": t0 + datetime.timedelta(minutes=m)}
        for m, v in [(0, 10), (1, 0), (2, 5), (2, 7)]
    ])
    metric = {"Namespace": "App", "MetricName": "Requests"}
    queries = [
        {"Id": "sum", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Sum"}},
        {"Id": "max", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Maximum"}, "Label": "Peak"},
        {"Id": "hidden", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Sum"}, "ReturnData": False},
    ]
    end = t0 + datetime.timedelta(minutes=10)
    out = cw.get_metric_data(MetricDataQueries=queries, StartTime=t0, EndTime=end)
    results = {r["Id"]: r for r in out["MetricDataResults"]}
    assert set(results) == {"sum", "max"}
    assert results["sum"]["Label"] == "Requests" and results["max"]["Label"] == "Peak"
    assert results["sum"]["Timestamps"] == [t0 + datetime.timedelta(minutes=m) for m in (2, 1, 0)]
    assert results["sum"]["Values"] == [12.0, 0.0, 10.0]
    assert results["max"]["Values"] == [7.0, 0.0, 10.0]
    assert all(r["StatusCode"] == "Complete" for r in results.values())
    assert "NextToken" not in out
    # Paging by datapoints: the pages concatenate to the same series.
    pages = list(cw.get_paginator("get_metric_data").paginate(
        MetricDataQueries=queries[:2], StartTime=t0, EndTime=end, ScanBy="TimestampAscending", MaxDatapoints=2
    ))
    assert len(pages) == 3
    joined = {}
    for page in pages:
        for r in page["MetricDataResults"]:
            joined.setdefault(r["Id"], []).extend(r["Values"])
    assert joined == {"sum": [10.0, 0.0, 12.0], "max": [10.0, 0.0, 7.0]}
    assert pages[0]["MetricDataResults"][0]["StatusCode"] == "PartialData"
    with pytest.raises(ClientError) as info:
        cw.get_metric_data(MetricDataQueries=queries, StartTime=t0, EndTime=end, NextToken="garbage")
    assert info.value.response["Error"]["Code"] == "InvalidNextToken"


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_get_metric_data_metric_math(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    t0 = minute_ago(30)
    at = lambda m: t0 + datetime.timedelta(minutes=m)  # noqa: E731
    cw.put_metric_data(Namespace="Math", MetricData=[
        {"MetricName": "Errors", "Value": 1.0, "Timestamp": at(0)},
        {"MetricName": "Errors", "Value": 0.0, "Timestamp": at(1)},
        {"MetricName": "Requests", "Value": 10.0, "Timestamp": at(0)},
        {"MetricName": "Requests", "Value": 0.0, "Timestamp": at(1)},
        {"MetricName": "Requests", "Value": 5.0, "Timestamp": at(2)},
    ])
    stat = lambda name: {"Metric": {"Namespace": "Math", "MetricName": name}, "Period": 60, "Stat": "Sum"}  # noqa: E731
    out = cw.get_metric_data(
        StartTime=t0, EndTime=at(5), ScanBy="TimestampAscending",
        MetricDataQueries=[
            {"Id": "m1", "MetricStat": stat("Errors"), "ReturnData": False},
            {"Id": "m2", "MetricStat": stat("Requests"), "ReturnData": False},
            {"Id": "rate", "Expression": "100*m1/m2", "Label": "Error %"},
            {"Id": "filled", "Expression": "FILL(m1, 0)"},
            {"Id": "each", "Expression": "METRICS()"},
        ],
    )
    results = out["MetricDataResults"]
    rate = results[0]
    assert (rate["Id"], rate["Label"]) == ("rate", "Error %")
    assert rate["Timestamps"] == [at(0), at(2)] and rate["Values"] == [10.0, 0.0]
    filled = results[1]
    assert filled["Label"] == "filled"
    assert filled["Values"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert [(r["Id"], r["Label"]) for r in results[2:]] == [("each", "Errors"), ("each", "Requests")]
    with pytest.raises(ClientError) as info:
        cw.get_metric_data(StartTime=t0, EndTime=at(5), MetricDataQueries=[
            {"Id": "m1", "MetricStat": stat("Errors")}, {"Id": "e1", "Expression": "m9 * 2"}])
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert info.value.response["Error"]["Message"] == "Error in expression e1: Unrecognized metric id m9"


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_get_metric_data_search(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    t0 = minute_ago(30)
    cw.put_metric_data(Namespace="Fleet", MetricData=[
        {"MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": f"i-{n}"}], "Value": float(10 * n), "Timestamp": t0}
        for n in (1, 2, 3)
    ] + [
        {"MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": "i-9"}, {"Name": "Type", "Value": "t3"}], "Value": 99.0, "Timestamp": t0},
        {"MetricName": "NetworkIn", "Dimensions": [{"Name": "InstanceId", "Value": "i-1"}], "Value": 5.0, "Timestamp": t0},
    ])
    out = cw.get_metric_data(
        StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=5),
        MetricDataQueries=[
            {"Id": "cpu", "Expression": "SEARCH('{Fleet,InstanceId} MetricName=\"CPUUtilization\"', 'Average', 60)"},
            {"Id": "total", "Expression": "SUM(SEARCH('{Fleet,InstanceId} CPUUtilization', 'Average', 60))", "Label": "Fleet CPU"},
            {"Id": "top", "Expression": "SORT(SEARCH('{Fleet} CPUUtilization', 'Maximum'), MAX, DESC, 1)", "Period": 60},
        ],
    )
    by_id = {}
    for r in out["MetricDataResults"]:
        by_id.setdefault(r["Id"], []).append(r)
    assert sorted((r["Label"], r["Values"]) for r in by_id["cpu"]) == [("i-1", [10.0]), ("i-2", [20.0]), ("i-3", [30.0])]
    assert [(r["Label"], r["Values"]) for r in by_id["total"]] == [("Fleet CPU", [60.0])]
    assert [r["Values"] for r in by_id["top"]] == [[99.0]]


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_get_metric_data_dynamic_labels(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    t0 = minute_ago(30)
    cw.put_metric_data(Namespace="Labels", MetricData=[
        {"MetricName": "Invocations", "Dimensions": [{"Name": "FunctionName", "Value": "fn-a"}], "Value": v, "Timestamp": t0 + datetime.timedelta(minutes=m)}
        for m, v in [(0, 3.0), (1, 17.0), (2, 2.5)]
    ])
    metric = {"Namespace": "Labels", "MetricName": "Invocations", "Dimensions": [{"Name": "FunctionName", "Value": "fn-a"}]}
    out = cw.get_metric_data(
        StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=5), LabelOptions={"Timezone": "+0100"},
        MetricDataQueries=[
            {"Id": "m1", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Sum"},
             "Label": "max: ${MAX} for ${PROP('Dim.FunctionName')} (${LABEL}, ${DATAPOINT_COUNT} points)"},
            {"Id": "found", "Expression": "SEARCH('{Labels,FunctionName}', 'Sum', 60)", "Label": "${LABEL} avg ${AVG}"},
        ],
    )
    labels = [r["Label"] for r in out["MetricDataResults"]]
    assert labels == ["max: 17 for fn-a (Invocations, 3 points)", "Invocations avg 7.5"]
    with pytest.raises(ClientError) as info:
        cw.get_metric_data(StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=5), LabelOptions={"Timezone": "UTC"},
                           MetricDataQueries=[{"Id": "m1", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Sum"}}])
    assert info.value.response["Error"]["Code"] == "InvalidParameterValue"


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_get_metric_data_metrics_insights(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    t0 = minute_ago(30)
    rows = [("lb-1", "us-east-1a", 10.0), ("lb-1", "us-east-1b", 40.0), ("lb-1", "us-east-1c", 25.0), ("lb-2", "us-east-1a", 99.0)]
    cw.put_metric_data(Namespace="ELB", MetricData=[
        {"MetricName": "RequestCount", "Dimensions": [{"Name": "LoadBalancer", "Value": lb}, {"Name": "AvailabilityZone", "Value": az}],
         "Value": v, "Timestamp": t0}
        for lb, az, v in rows
    ])
    sql = ("SELECT SUM(RequestCount) FROM SCHEMA(ELB, LoadBalancer, AvailabilityZone) "
           "WHERE LoadBalancer = 'lb-1' GROUP BY AvailabilityZone ORDER BY MAX() DESC LIMIT 2")
    out = cw.get_metric_data(
        StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=5),
        MetricDataQueries=[
            {"Id": "top", "Expression": sql, "Period": 60},
            {"Id": "total", "Expression": "SELECT SUM(RequestCount) FROM ELB", "Period": 60},
        ],
    )
    results = out["MetricDataResults"]
    assert [(r["Id"], r["Label"], r["Values"]) for r in results] == [
        ("top", "us-east-1b", [40.0]), ("top", "us-east-1c", [25.0]), ("total", "total", [174.0]),
    ]
    with pytest.raises(ClientError) as info:
        cw.get_metric_data(StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=5),
                           MetricDataQueries=[{"Id": "q", "Expression": "SELECT MEDIAN(RequestCount) FROM ELB", "Period": 60}])
    assert info.value.response["Error"]["Code"] == "ValidationError"


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_put_metric_data_over_one_megabyte_is_refused(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    big = [{"MetricName": f"m{i}", "Dimensions": [{"Name": "Blob", "Value": "x" * 1000}, {"Name": "B2", "Value": "y" * 1000}], "Value": 1.0}
           for i in range(600)]
    with pytest.raises(ClientError) as info:
        cw.put_metric_data(Namespace="Big", MetricData=big)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert info.value.response["Error"]["Code"] == "RequestEntityTooLarge"
    assert list_all(cw, Namespace="Big") == []


def test_values_exact_through_segments_and_restart(tmp_path):
    """Values go from the WAL into segment objects (flushed every second here),
    then through a restart, and still come back bit for bit."""
    srv = Server(str(tmp_path / "data"), extra_env={"TRAILWATCH_FLUSH_INTERVAL_SECS": "1"})
    srv.start()
    values = [0.1, 1 / 3, 123456789.123, -5.5, 1e-7, 6.02214076e23, 42.0, 2.5e-100]
    t0 = minute_ago(len(values) + 2)
    dims = [{"Name": "Host", "Value": "h-1"}]

    def stats(protocol):
        cw = srv.client("cloudwatch", protocol=protocol)
        out = cw.get_metric_statistics(
            Namespace="Exact", MetricName="V", Dimensions=dims, StartTime=t0,
            EndTime=t0 + datetime.timedelta(minutes=len(values) + 1), Period=60,
            Statistics=["Maximum", "Sum", "SampleCount"],
        )
        return sorted((p["Timestamp"], p["Maximum"], p["Sum"], p["SampleCount"]) for p in out["Datapoints"])

    expected = [
        (t0 + datetime.timedelta(minutes=i), v, v + (10.0 if i == 0 else 0.0), 1.0 + (3.0 if i == 0 else 0.0))
        for i, v in enumerate(values)
    ]
    # Minute 0 also gets a set and a Values/Counts pair: Maximum stays the max.
    expected[0] = (t0, 4.0, 0.1 + 4.0 + 2.0 + 4.0, 4.0)
    try:
        cw = srv.client("cloudwatch", protocol=CLOUDWATCH_PROTOCOLS[0])
        cw.put_metric_data(Namespace="Exact", MetricData=[
            {"MetricName": "V", "Dimensions": dims, "Value": v, "Timestamp": t0 + datetime.timedelta(minutes=i)}
            for i, v in enumerate(values)
        ] + [
            {"MetricName": "V", "Dimensions": dims, "Timestamp": t0,
             "StatisticValues": {"SampleCount": 1, "Sum": 4.0, "Minimum": 4.0, "Maximum": 4.0}},
            {"MetricName": "V", "Dimensions": dims, "Timestamp": t0, "Values": [2.0, 4.0], "Counts": [1, 1]},
        ])
        deadline = time.time() + 20
        segments = []
        while time.time() < deadline and not segments:
            time.sleep(0.5)
            segments = [f for _, _, files in os.walk(tmp_path / "data" / "objects" / "metrics") for f in files]
        assert segments, "no metric segment was written"
        for protocol in CLOUDWATCH_PROTOCOLS:
            assert stats(protocol) == expected, protocol
    finally:
        assert srv.stop() == 0
    srv.start()
    try:
        for protocol in CLOUDWATCH_PROTOCOLS:
            assert stats(protocol) == expected, protocol
    finally:
        srv.stop()


def test_rollup_tiers_as_days_pass(tmp_path, monkeypatch):
    """Minute data published now, read back 20, 70 and 460 days later (the
    server's clock shifted): hours and 5-minute buckets from the rollup tiers
    with the same sums, counts and percentiles, minute periods gone after 15
    days, 5-minute periods after 63, everything after 455."""
    import math
    data = str(tmp_path / "data")
    srv = Server(data)
    srv.start()
    hour = datetime.datetime.now(datetime.timezone.utc).replace(minute=0, second=0, microsecond=0) - datetime.timedelta(hours=2)
    values = [float((i * 37) % 100) for i in range(60)]
    try:
        cw = srv.client("cloudwatch", protocol=CLOUDWATCH_PROTOCOLS[0])
        cw.put_metric_data(Namespace="Tier", MetricData=[
            {"MetricName": "Load", "Value": v, "Timestamp": hour + datetime.timedelta(minutes=i)}
            for i, v in enumerate(values)
        ])
    finally:
        assert srv.stop() == 0
    ranked = sorted(values)
    p90 = ranked[math.ceil(0.9 * len(ranked)) - 1]

    def stats(period, extended=False):
        cw = srv.client("cloudwatch", protocol=CLOUDWATCH_PROTOCOLS[1])
        kwargs = {"ExtendedStatistics": ["p90"]} if extended else {"Statistics": ["Sum", "SampleCount"]}
        return cw.get_metric_statistics(Namespace="Tier", MetricName="Load", StartTime=hour,
                                        EndTime=hour + datetime.timedelta(hours=1), Period=period, **kwargs)["Datapoints"]

    import botocore.auth
    real_now = botocore.auth.get_current_datetime
    for days, hourly, five_minute in [(20, True, True), (70, True, False), (460, False, False)]:
        # The client lives in the same future as the server, or SigV4 skew refuses it.
        monkeypatch.setattr(botocore.auth, "get_current_datetime",
                            lambda *a, days=days, **k: real_now(*a, **k) + datetime.timedelta(days=days))
        srv.extra_env = {"TRAILWATCH_CLOCK_OFFSET_SECS": str(days * 86400), "TRAILWATCH_FLUSH_INTERVAL_SECS": "1"}
        srv.start()
        try:
            got = stats(3600)
            if hourly:
                assert [(p["Sum"], p["SampleCount"]) for p in got] == [(sum(values), 60.0)], days
                assert [p["ExtendedStatistics"]["p90"] for p in stats(3600, True)] == [p90], days
            else:
                assert got == [], days
            five = stats(300)
            if five_minute:
                assert [p["SampleCount"] for p in five] == [5.0] * 12, days
                assert sum(p["Sum"] for p in five) == sum(values)
            else:
                assert five == [], days
            assert stats(60) == [], days  # minute periods left with the raw data
            if days == 20:
                # The background job really moved the day into the 5-minute tier.
                deadline = time.time() + 20
                while time.time() < deadline and not any("/t2/" in root for root, _, files in os.walk(os.path.join(data, "objects")) if files):
                    time.sleep(0.2)
                assert any("/t2/" in root for root, _, files in os.walk(os.path.join(data, "objects")) if files)
        finally:
            assert srv.stop() == 0
