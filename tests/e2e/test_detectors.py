"""CloudWatch metric anomaly detectors (spec/cloudwatch.md §9.1) over every
CloudWatch protocol: the three Put forms, update, Describe filters and paging,
Delete, and the modelled errors."""
import datetime
import time

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, REGION, SECRET_KEY, force_protocol

CLOUDWATCH_PROTOCOLS = ["smithy-rpc-v2-cbor", "json", "query"]
HOST = [{"Name": "Host", "Value": "web-1"}]


def unvalidated_client(server, protocol):
    """A client that sends what botocore would refuse, so the server's own checks answer."""
    session = botocore.session.get_session()
    force_protocol(session, "cloudwatch", protocol)
    return boto3.Session(botocore_session=session).client(
        "cloudwatch", endpoint_url=server.endpoint, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, parameter_validation=False),
    )


def error(info):
    return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def math_form(expression="m1 * 2"):
    return {"MetricDataQueries": [
        {"Id": "m1", "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": "App", "MetricName": "Latency", "Dimensions": HOST},
            "Period": 300, "Stat": "Average"}},
        {"Id": "e1", "Expression": expression, "Label": "doubled", "ReturnData": True},
    ]}


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_put_update_describe_delete(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    legacy = cw.put_anomaly_detector(Namespace="App", MetricName="Latency", Dimensions=HOST, Stat="p90")
    nested = cw.put_anomaly_detector(SingleMetricAnomalyDetector={
        "Namespace": "App", "MetricName": "Latency", "Dimensions": HOST, "Stat": "p90"})
    # The same identity in either form names the same detector.
    assert legacy["AnomalyDetectorId"] == nested["AnomalyDetectorId"]
    cw.put_anomaly_detector(SingleMetricAnomalyDetector={
        "Namespace": "App", "MetricName": "Errors", "Stat": "Sum"})
    math = cw.put_anomaly_detector(MetricMathAnomalyDetector=math_form())
    assert math["AnomalyDetectorId"] != legacy["AnomalyDetectorId"]

    # Same identity: the configuration is updated, no new detector.
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cw.put_anomaly_detector(
        Namespace="App", MetricName="Latency", Dimensions=HOST, Stat="p90",
        Configuration={"ExcludedTimeRanges": [{"StartTime": start, "EndTime": start + datetime.timedelta(hours=2)}],
                       "MetricTimezone": "Europe/Paris"},
        MetricCharacteristics={"PeriodicSpikes": True})
    singles = cw.describe_anomaly_detectors()["AnomalyDetectors"]
    assert len(singles) == 2
    latency = next(d for d in singles if d["SingleMetricAnomalyDetector"]["MetricName"] == "Latency")
    assert latency["SingleMetricAnomalyDetector"] == {
        "Namespace": "App", "MetricName": "Latency", "Dimensions": HOST, "Stat": "p90"}
    assert latency["Namespace"] == "App" and latency["Stat"] == "p90"
    assert latency["Configuration"]["MetricTimezone"] == "Europe/Paris"
    assert latency["Configuration"]["ExcludedTimeRanges"][0]["StartTime"] == start
    assert latency["MetricCharacteristics"] == {"PeriodicSpikes": True}
    assert latency["StateValue"] == "PENDING_TRAINING"

    maths = cw.describe_anomaly_detectors(AnomalyDetectorTypes=["METRIC_MATH"])["AnomalyDetectors"]
    assert len(maths) == 1
    queries = maths[0]["MetricMathAnomalyDetector"]["MetricDataQueries"]
    assert [q["Id"] for q in queries] == ["m1", "e1"]
    assert queries[1] == {"Id": "e1", "Expression": "m1 * 2", "Label": "doubled", "ReturnData": True}
    assert "SingleMetricAnomalyDetector" not in maths[0]

    cw.delete_anomaly_detector(SingleMetricAnomalyDetector={
        "Namespace": "App", "MetricName": "Latency", "Dimensions": HOST, "Stat": "p90"})
    cw.delete_anomaly_detector(MetricMathAnomalyDetector=math_form())
    remaining = cw.describe_anomaly_detectors(AnomalyDetectorTypes=["SINGLE_METRIC", "METRIC_MATH"])
    assert [d["SingleMetricAnomalyDetector"]["MetricName"] for d in remaining["AnomalyDetectors"]] == ["Errors"]
    with pytest.raises(ClientError) as info:
        cw.delete_anomaly_detector(Namespace="App", MetricName="Latency", Dimensions=HOST, Stat="p90")
    assert error(info) == ("ResourceNotFoundException", 404)


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_describe_filters_and_paging(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    ids = []
    for i in range(5):
        ids.append(cw.put_anomaly_detector(Namespace="App", MetricName=f"M{i}", Stat="Average",
                                           Dimensions=HOST if i % 2 else [])["AnomalyDetectorId"])
    cw.put_anomaly_detector(Namespace="Other", MetricName="M0", Stat="Average")

    assert len(cw.describe_anomaly_detectors(Namespace="App")["AnomalyDetectors"]) == 5
    assert len(cw.describe_anomaly_detectors(MetricName="M0")["AnomalyDetectors"]) == 2
    assert len(cw.describe_anomaly_detectors(Namespace="App", Dimensions=HOST)["AnomalyDetectors"]) == 2
    by_id = cw.describe_anomaly_detectors(AnomalyDetectorIds=[ids[0], ids[3]])["AnomalyDetectors"]
    assert sorted(d["MetricName"] for d in by_id) == ["M0", "M3"]

    seen, token, pages = [], None, 0
    while True:
        kwargs = {"Namespace": "App", "MaxResults": 2}
        if token:
            kwargs["NextToken"] = token
        page = cw.describe_anomaly_detectors(**kwargs)
        pages += 1
        seen += [d["MetricName"] for d in page["AnomalyDetectors"]]
        token = page.get("NextToken")
        if not token:
            break
    assert pages == 3 and sorted(seen) == [f"M{i}" for i in range(5)]

    first = cw.describe_anomaly_detectors(Namespace="App", MaxResults=2)
    with pytest.raises(ClientError) as info:
        # A token is bound to the filters it was issued for.
        cw.describe_anomaly_detectors(Namespace="Other", MaxResults=2, NextToken=first["NextToken"])
    assert error(info) == ("InvalidNextToken", 400)
    with pytest.raises(ClientError) as info:
        cw.describe_anomaly_detectors(AnomalyDetectorIds=[ids[0]], Namespace="App")
    assert error(info)[1] == 400
    assert "InvalidParameterCombination" in error(info)[0]


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_put_errors(server, protocol):
    cw = unvalidated_client(server, protocol)
    single = {"Namespace": "App", "MetricName": "Latency", "Stat": "Average"}
    cases = [
        (dict(Namespace="App", MetricName="Latency", Stat="Average", SingleMetricAnomalyDetector=single),
         "InvalidParameterCombination"),
        (dict(SingleMetricAnomalyDetector=single, MetricMathAnomalyDetector=math_form()),
         "InvalidParameterCombination"),
        (dict(Namespace="App", MetricName="Latency", Stat="p101"), "InvalidParameterValue"),
        (dict(Namespace="App", MetricName="Latency"), "MissingParameter"),
        (dict(MetricMathAnomalyDetector=math_form("SEARCH('{App} Latency', 'Average', 300)")),
         "InvalidParameterValue"),
        (dict(SingleMetricAnomalyDetector=single,
              Configuration={"AdaptationSpeed": "WARP"}), "InvalidParameterValue"),
        (dict(SingleMetricAnomalyDetector=single, Configuration={"ExcludedTimeRanges": [
            {"StartTime": datetime.datetime(2026, 1, 1), "EndTime": datetime.datetime(2026, 1, 2)}] * 11}),
         "InvalidParameterValue"),
    ]
    for params, code in cases:
        with pytest.raises(ClientError) as info:
            cw.put_anomaly_detector(**params)
        got, status = error(info)
        assert code in got and status == 400, (params, got)
    two_returned = math_form()
    two_returned["MetricDataQueries"][0]["ReturnData"] = True
    with pytest.raises(ClientError) as info:
        cw.put_anomaly_detector(MetricMathAnomalyDetector=two_returned)
    assert "InvalidParameterValue" in error(info)[0]
    assert cw.describe_anomaly_detectors(AnomalyDetectorTypes=["SINGLE_METRIC", "METRIC_MATH"])[
        "AnomalyDetectors"] == []


def test_state_value_follows_training_data(server):
    cw = server.client("cloudwatch", protocol="json")
    now = datetime.datetime.now(datetime.timezone.utc)
    for name, ages in [("Short", [2, 1]), ("Medium", [40, 1]), ("Long", [24 * 4, 1])]:
        cw.put_metric_data(Namespace="Train", MetricData=[
            {"MetricName": name, "Value": 1.0, "Timestamp": now - datetime.timedelta(hours=h)} for h in ages])
        cw.put_anomaly_detector(Namespace="Train", MetricName=name, Stat="Average")
    cw.put_anomaly_detector(Namespace="Train", MetricName="Nothing", Stat="Average")
    states = {d["MetricName"]: d["StateValue"]
              for d in cw.describe_anomaly_detectors(Namespace="Train")["AnomalyDetectors"]}
    assert states == {"Short": "PENDING_TRAINING", "Medium": "TRAINED_INSUFFICIENT_DATA",
                      "Long": "TRAINED", "Nothing": "PENDING_TRAINING"}


def expected_band(training, times, k):
    """§9.2 computed here, independently of the server: hour-of-week slot
    means (3 samples or more), else the mean of the last 24 hours; slot
    residual deviation, else the overall one; floor 1% of |expected|; lower
    edge clamped at 0 when every training value is non-negative."""
    import statistics

    def slot(t):
        return (t // 3600) % 168

    by_slot = {}
    for t, v in training:
        by_slot.setdefault(slot(t), []).append(v)
    last = max(t for t, _ in training)
    recent = statistics.fmean(v for t, v in training if t > last - 86400)
    slots = {s: (statistics.fmean(vs), statistics.pstdev(vs)) for s, vs in by_slot.items() if len(vs) >= 3}
    residuals = [v - (slots[slot(t)][0] if slot(t) in slots else recent) for t, v in training]
    overall = (sum(r * r for r in residuals) / len(residuals)) ** 0.5
    out = []
    for t in times:
        m, s = slots.get(slot(t), (recent, overall))
        if s <= 0:
            s = overall
        s = max(s, 0.01 * abs(m), 1e-9)
        lo, hi = m - k * s, m + k * s
        if all(v >= 0 for _, v in training):
            lo = max(lo, 0.0)
        out.append((lo, hi))
    return out


def test_anomaly_band_in_get_metric_data_and_a_band_alarm(server):
    cw = server.client("cloudwatch", protocol="json")
    now = int(time.time()) // 3600 * 3600
    # Four days of hourly values with a daily shape, ending 3 hours ago.
    training = [(now - h * 3600, 10.0 + (h % 24) + (h % 5) * 0.25) for h in range(4, 4 + 96)]
    for chunk in range(0, len(training), 500):
        cw.put_metric_data(Namespace="Band", MetricData=[
            {"MetricName": "Latency", "Value": v, "Timestamp": datetime.datetime.fromtimestamp(t, datetime.timezone.utc)}
            for t, v in training[chunk:chunk + 500]])
    start = now - 3 * 3600
    out = cw.get_metric_data(
        MetricDataQueries=[
            {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "Band", "MetricName": "Latency"}, "Period": 3600, "Stat": "Average"}},
            {"Id": "ad1", "Expression": "ANOMALY_DETECTION_BAND(m1, 2)"},
        ],
        StartTime=datetime.datetime.fromtimestamp(start, datetime.timezone.utc),
        EndTime=datetime.datetime.fromtimestamp(now, datetime.timezone.utc),
        ScanBy="TimestampAscending",
    )["MetricDataResults"]
    bands = [r for r in out if r["Id"] == "ad1"]
    assert [b["Label"] for b in bands] == ["Latency (upper band)", "Latency (lower band)"]
    times = [int(t.timestamp()) for t in bands[0]["Timestamps"]]
    assert times == [start, start + 3600, start + 7200]
    want = expected_band(training, times, 2.0)
    for (lo, hi), upper, lower in zip(want, bands[0]["Values"], bands[1]["Values"]):
        assert upper == pytest.approx(hi, rel=1e-9) and lower == pytest.approx(lo, rel=1e-9)
    # Under a day of training: the band is empty.
    short = cw.get_metric_data(
        MetricDataQueries=[
            {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "Band", "MetricName": "Latency"}, "Period": 3600, "Stat": "Average"}},
            {"Id": "ad1", "Expression": "ANOMALY_DETECTION_BAND(m1)"},
        ],
        StartTime=datetime.datetime.fromtimestamp(now - 95 * 3600, datetime.timezone.utc),
        EndTime=datetime.datetime.fromtimestamp(now - 94 * 3600, datetime.timezone.utc),
    )["MetricDataResults"]
    assert [r["Values"] for r in short if r["Id"] == "ad1"] == [[], []]

    # An alarm on the band: a value far above the upper edge, in the newest
    # minute bucket, alarms at once.
    cw.put_metric_data(Namespace="Band", MetricData=[{"MetricName": "Spike", "Value": 5.0,
        "Timestamp": datetime.datetime.fromtimestamp(t, datetime.timezone.utc)} for t in range(now - 4 * 86400, now - 7200, 600)])
    cw.put_metric_data(Namespace="Band", MetricData=[{"MetricName": "Spike", "Value": 500.0}])
    cw.put_metric_alarm(
        AlarmName="spike-band", ComparisonOperator="GreaterThanUpperThreshold", EvaluationPeriods=1,
        ThresholdMetricId="ad1", TreatMissingData="ignore",
        Metrics=[
            {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "Band", "MetricName": "Spike"}, "Period": 60, "Stat": "Maximum"}, "ReturnData": True},
            {"Id": "ad1", "Expression": "ANOMALY_DETECTION_BAND(m1, 2)", "ReturnData": True},
        ],
    )
    deadline = time.time() + 90
    while True:
        alarm = cw.describe_alarms(AlarmNames=["spike-band"])["MetricAlarms"][0]
        if alarm["StateValue"] == "ALARM" or time.time() > deadline:
            break
        time.sleep(1)
    assert alarm["StateValue"] == "ALARM", alarm["StateReason"]
    assert alarm["StateReason"].startswith("Thresholds Crossed: 1 out of the last 1 datapoints [500.0 (")
    # Constant training values: deviation floored at 1 % of 5.0, so 5.0 + 2 x 0.05.
    assert "was greater than the upper thresholds [5.1" in alarm["StateReason"]
    # The alarm created the band's detector (§9.2 point 5).
    detectors = cw.describe_anomaly_detectors(Namespace="Band", MetricName="Spike")["AnomalyDetectors"]
    assert [(d["SingleMetricAnomalyDetector"]["Stat"], d["StateValue"]) for d in detectors] == [("Maximum", "TRAINED")]
