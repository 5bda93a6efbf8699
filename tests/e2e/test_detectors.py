"""CloudWatch metric anomaly detectors (spec/cloudwatch.md §9.1) over every
CloudWatch protocol: the three Put forms, update, Describe filters and paging,
Delete, and the modelled errors."""
import datetime

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
