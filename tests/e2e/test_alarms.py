"""CloudWatch metric alarm APIs end to end (spec/cloudwatch.md §7.1, §7.7–7.9, §11):
PutMetricAlarm, DescribeAlarms with every filter and paging, DescribeAlarmsForMetric,
SetAlarmState and DescribeAlarmHistory, Enable/DisableAlarmActions, DeleteAlarms,
alarm tags and validation errors, in all three CloudWatch protocols."""
import datetime
import json

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY, force_protocol

CLOUDWATCH_PROTOCOLS = ["smithy-rpc-v2-cbor", "json", "query"]
ARN_PREFIX = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:"


def unvalidated_client(server, protocol):
    """A client that sends what botocore would refuse, so the server's own checks answer."""
    session = botocore.session.get_session()
    force_protocol(session, "cloudwatch", protocol)
    return boto3.Session(botocore_session=session).client(
        "cloudwatch", endpoint_url=server.endpoint, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, parameter_validation=False),
    )


def put(cw, name, **overrides):
    params = dict(
        AlarmName=name, MetricName="Latency", Namespace="App", Statistic="Average",
        Dimensions=[{"Name": "Host", "Value": "web-1"}], Period=60, EvaluationPeriods=3,
        Threshold=100.0, ComparisonOperator="GreaterThanThreshold",
    )
    params.update(overrides)
    cw.put_metric_alarm(**params)


def names(page):
    return [a["AlarmName"] for a in page["MetricAlarms"]]


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_put_describe_update_delete(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    put(cw, "high-latency", AlarmDescription="Latency above 100ms", DatapointsToAlarm=2,
        Unit="Milliseconds", TreatMissingData="notBreaching",
        AlarmActions=["arn:aws:sns:us-east-1:111122223333:ops"], Tags=[{"Key": "team", "Value": "sre"}])
    [alarm] = cw.describe_alarms(AlarmNames=["high-latency"])["MetricAlarms"]
    assert alarm["AlarmArn"] == ARN_PREFIX + "high-latency"
    # Created in INSUFFICIENT_DATA, then evaluated at once (§7.1): no data,
    # treated as not breaching, is OK.
    assert alarm["StateValue"] == "OK"
    assert alarm["StateReason"] == (
        "Threshold Crossed: no datapoints were received for 3 periods and "
        "3 missing datapoints were treated as [NonBreaching]."
    )
    history = cw.describe_alarm_history(AlarmName="high-latency")["AlarmHistoryItems"]
    assert [h["HistorySummary"] for h in history] == [
        "Alarm updated from INSUFFICIENT_DATA to OK",
        'Alarm "high-latency" created',
    ]
    assert alarm["ActionsEnabled"] is True
    assert alarm["OKActions"] == [] and alarm["InsufficientDataActions"] == []
    assert alarm["AlarmActions"] == ["arn:aws:sns:us-east-1:111122223333:ops"]
    assert alarm["Dimensions"] == [{"Name": "Host", "Value": "web-1"}]
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (60, 3, 2)
    assert alarm["Threshold"] == 100.0 and alarm["Unit"] == "Milliseconds"
    assert alarm["TreatMissingData"] == "notBreaching"
    assert isinstance(alarm["StateTransitionedTimestamp"], datetime.datetime)
    assert alarm["AlarmConfigurationUpdatedTimestamp"] == alarm["StateUpdatedTimestamp"]
    assert cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"] == [{"Key": "team", "Value": "sre"}]

    # An update replaces the configuration, keeps the state and ignores Tags
    # (its re-evaluation finds no data and, ignoring missing data, keeps it).
    cw.set_alarm_state(AlarmName="high-latency", StateValue="ALARM", StateReason="testing")
    put(cw, "high-latency", Threshold=5.0, TreatMissingData="ignore", Tags=[{"Key": "other", "Value": "x"}])
    [alarm] = cw.describe_alarms(AlarmNames=["high-latency"])["MetricAlarms"]
    assert (alarm["StateValue"], alarm["Threshold"]) == ("ALARM", 5.0)
    assert "DatapointsToAlarm" not in alarm and "AlarmDescription" not in alarm
    assert cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"] == [{"Key": "team", "Value": "sre"}]

    # Metric math and anomaly band forms.
    cw.put_metric_alarm(
        AlarmName="error-rate", EvaluationPeriods=2, Threshold=1.0, ComparisonOperator="GreaterThanThreshold",
        Metrics=[
            {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "Errors"}, "Period": 60, "Stat": "Sum"}, "ReturnData": False},
            {"Id": "e1", "Expression": "m1 / 60", "Label": "rate", "ReturnData": True},
        ],
    )
    cw.put_metric_alarm(
        AlarmName="latency-band", EvaluationPeriods=1, ComparisonOperator="LessThanLowerOrGreaterThanUpperThreshold",
        ThresholdMetricId="ad1",
        Metrics=[
            {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "Latency"}, "Period": 300, "Stat": "p99"}, "ReturnData": True},
            {"Id": "ad1", "Expression": "ANOMALY_DETECTION_BAND(m1, 2)", "ReturnData": True},
        ],
    )
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms()["MetricAlarms"]}
    assert list(alarms) == ["error-rate", "high-latency", "latency-band"]
    math = alarms["error-rate"]
    assert "MetricName" not in math and math["Dimensions"] == []
    assert math["Metrics"][0]["MetricStat"]["Metric"]["MetricName"] == "Errors"
    assert math["Metrics"][1] == {"Id": "e1", "Expression": "m1 / 60", "Label": "rate", "ReturnData": True}
    band = alarms["latency-band"]
    assert band["ThresholdMetricId"] == "ad1" and "Threshold" not in band

    cw.delete_alarms(AlarmNames=["error-rate", "no-such-alarm"])
    assert names(cw.describe_alarms()) == ["high-latency", "latency-band"]
    with pytest.raises(ClientError) as info:
        cw.delete_alarms(AlarmNames=["no-such-alarm"])
    assert info.value.response["Error"]["Code"] == "ResourceNotFound"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # Deleting an alarm deletes its tags; recreating starts without them.
    cw.delete_alarms(AlarmNames=["high-latency"])
    put(cw, "high-latency")
    assert cw.list_tags_for_resource(ResourceARN=ARN_PREFIX + "high-latency")["Tags"] == []


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_window_warm_up_and_action_configuration_are_echoed(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    put(cw, "wall", EvaluationWindow={"WallClockWindow": {"Timezone": "Europe/Paris"}},
        WarmUpConfiguration={"WarmUpPeriodDurationInMinutes": 30, "OnlyStartEvaluatingAfterWarmUpPeriodEnds": True},
        ActionConfiguration={"AlarmTagsPropagation": {"Enabled": True, "IncludedTagKeys": ["team"]}})
    put(cw, "sliding", EvaluationWindow={"SlidingWindow": {}})
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms()["MetricAlarms"]}
    wall = alarms["wall"]
    assert wall["EvaluationWindow"] == {"WallClockWindow": {"Timezone": "Europe/Paris"}}
    assert wall["WarmUpConfiguration"] == {"WarmUpPeriodDurationInMinutes": 30, "OnlyStartEvaluatingAfterWarmUpPeriodEnds": True}
    assert wall["ActionConfiguration"] == {"AlarmTagsPropagation": {"Enabled": True, "IncludedTagKeys": ["team"]}}
    assert (wall["StateValue"], wall["EvaluationState"]) == ("INSUFFICIENT_DATA", "IN_WARM_UP")
    # awsQuery has no way to send an empty structure: botocore sends nothing.
    if protocol != "query":
        assert alarms["sliding"]["EvaluationWindow"] == {"SlidingWindow": {}}
    assert "EvaluationState" not in alarms["sliding"]


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_describe_filters_and_paging(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    for i in range(7):
        put(cw, f"web-{i}", OKActions=[f"arn:aws:sns:us-east-1:111122223333:ok{i}"] if i % 2 else [])
    put(cw, "db-1", MetricName="Connections", Dimensions=[], Statistic="Maximum", Period=300)
    cw.set_alarm_state(AlarmName="web-3", StateValue="OK", StateReason="manual")

    assert names(cw.describe_alarms(AlarmNamePrefix="web-")) == [f"web-{i}" for i in range(7)]
    assert names(cw.describe_alarms(AlarmNames=["db-1", "web-2", "missing"])) == ["db-1", "web-2"]
    assert names(cw.describe_alarms(StateValue="OK")) == ["web-3"]
    assert names(cw.describe_alarms(StateValue="INSUFFICIENT_DATA", AlarmNamePrefix="web-")) == [
        "web-0", "web-1", "web-2", "web-4", "web-5", "web-6"]
    assert names(cw.describe_alarms(ActionPrefix="arn:aws:sns:us-east-1:111122223333:ok")) == ["web-1", "web-3", "web-5"]
    assert names(cw.describe_alarms(AlarmTypes=["MetricAlarm", "CompositeAlarm"]))[0] == "db-1"
    only_composite = cw.describe_alarms(AlarmTypes=["CompositeAlarm"])
    assert only_composite["MetricAlarms"] == [] and only_composite["CompositeAlarms"] == []
    assert cw.describe_alarms(ChildrenOfAlarmName="web-1")["MetricAlarms"] == []
    assert cw.describe_alarms(ParentsOfAlarmName="web-1")["MetricAlarms"] == []

    pages = list(cw.get_paginator("describe_alarms").paginate(PaginationConfig={"PageSize": 3}))
    assert [len(p["MetricAlarms"]) for p in pages] == [3, 3, 2]
    assert "NextToken" not in pages[-1]
    assert [n for p in pages for n in names(p)] == ["db-1"] + [f"web-{i}" for i in range(7)]

    def error(**kwargs):
        with pytest.raises(ClientError) as info:
            cw.describe_alarms(**kwargs)
        return info.value.response

    e = error(NextToken="not-a-token")
    assert e["Error"]["Code"] == "InvalidNextToken"
    assert e["ResponseMetadata"]["HTTPStatusCode"] == 400
    # A token issued for other filters is refused too.
    token = cw.describe_alarms(MaxRecords=1)["NextToken"]
    assert error(NextToken=token, StateValue="OK")["Error"]["Code"] == "InvalidNextToken"
    assert error(AlarmNames=["a"], AlarmNamePrefix="a")["Error"]["Code"] == "InvalidParameterCombination"
    assert error(ChildrenOfAlarmName="a", StateValue="OK")["Error"]["Code"] == "ValidationError"

    for_metric = cw.describe_alarms_for_metric(MetricName="Latency", Namespace="App",
                                               Dimensions=[{"Name": "Host", "Value": "web-1"}])
    assert len(for_metric["MetricAlarms"]) == 7
    assert cw.describe_alarms_for_metric(MetricName="Latency", Namespace="App")["MetricAlarms"] == []
    assert names(cw.describe_alarms_for_metric(MetricName="Connections", Namespace="App", Period=300)) == ["db-1"]
    assert cw.describe_alarms_for_metric(MetricName="Connections", Namespace="App", Statistic="Sum")["MetricAlarms"] == []


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_set_state_history_and_actions(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    put(cw, "cpu")
    put(cw, "mem")
    cw.set_alarm_state(AlarmName="cpu", StateValue="ALARM", StateReason="forced",
                       StateReasonData=json.dumps({"version": "1.0", "k": 1}))
    [alarm] = cw.describe_alarms(AlarmNames=["cpu"])["MetricAlarms"]
    assert (alarm["StateValue"], alarm["StateReason"]) == ("ALARM", "forced")
    assert json.loads(alarm["StateReasonData"]) == {"version": "1.0", "k": 1}

    with pytest.raises(ClientError) as info:
        cw.set_alarm_state(AlarmName="cpu", StateValue="OK", StateReason="x", StateReasonData="{not json")
    assert info.value.response["Error"]["Code"] == "InvalidFormat"
    assert info.value.response["Error"]["Message"] == "StateReasonData was not syntactically valid JSON"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as info:
        cw.set_alarm_state(AlarmName="nope", StateValue="OK", StateReason="x")
    assert info.value.response["Error"]["Code"] == "ResourceNotFound"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    cw.disable_alarm_actions(AlarmNames=["cpu", "unknown"])
    assert cw.describe_alarms(AlarmNames=["cpu"])["MetricAlarms"][0]["ActionsEnabled"] is False
    cw.enable_alarm_actions(AlarmNames=["cpu"])
    assert cw.describe_alarms(AlarmNames=["cpu"])["MetricAlarms"][0]["ActionsEnabled"] is True

    items = cw.describe_alarm_history(AlarmName="cpu")["AlarmHistoryItems"]
    assert [i["HistorySummary"] for i in items] == [
        'Alarm "cpu" updated', 'Alarm "cpu" updated',
        "Alarm updated from INSUFFICIENT_DATA to ALARM", 'Alarm "cpu" created']
    state = json.loads(items[2]["HistoryData"])
    assert state["oldState"]["stateValue"] == "INSUFFICIENT_DATA"
    assert state["newState"] == {"stateValue": "ALARM", "stateReason": "forced", "stateReasonData": {"version": "1.0", "k": 1}}
    created = json.loads(items[3]["HistoryData"])
    assert created["type"] == "Create" and created["createdAlarm"]["alarmName"] == "cpu"
    assert all(i["AlarmType"] == "MetricAlarm" and i["AlarmName"] == "cpu" for i in items)

    updates = cw.describe_alarm_history(HistoryItemType="StateUpdate")["AlarmHistoryItems"]
    assert [i["AlarmName"] for i in updates] == ["cpu"]
    ascending = cw.describe_alarm_history(ScanBy="TimestampAscending")["AlarmHistoryItems"]
    assert [i["HistorySummary"] for i in ascending][:2] == ['Alarm "cpu" created', 'Alarm "mem" created']
    assert cw.describe_alarm_history(AlarmTypes=["CompositeAlarm"])["AlarmHistoryItems"] == []
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    assert cw.describe_alarm_history(StartDate=future)["AlarmHistoryItems"] == []
    assert len(cw.describe_alarm_history(EndDate=future)["AlarmHistoryItems"]) == 5

    pages = list(cw.get_paginator("describe_alarm_history").paginate(PaginationConfig={"PageSize": 2}))
    assert [len(p["AlarmHistoryItems"]) for p in pages] == [2, 2, 1]
    assert "NextToken" not in pages[-1]
    with pytest.raises(ClientError) as info:
        cw.describe_alarm_history(NextToken="garbage")
    assert info.value.response["Error"]["Code"] == "InvalidNextToken"

    # History outlives its alarm.
    cw.delete_alarms(AlarmNames=["mem"])
    items = cw.describe_alarm_history(AlarmName="mem")["AlarmHistoryItems"]
    assert [i["HistorySummary"] for i in items] == ['Alarm "mem" deleted', 'Alarm "mem" created']


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_alarm_tags(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    put(cw, "tagged")
    arn = ARN_PREFIX + "tagged"
    cw.tag_resource(ResourceARN=arn, Tags=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "1"}])
    cw.tag_resource(ResourceARN=arn, Tags=[{"Key": "a", "Value": "one"}])
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "a", "Value": "one"}, {"Key": "b", "Value": "2"}]
    cw.untag_resource(ResourceARN=arn, TagKeys=["b"])
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "a", "Value": "one"}]
    with pytest.raises(ClientError) as info:
        cw.list_tags_for_resource(ResourceARN=ARN_PREFIX + "missing")
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as info:
        cw.tag_resource(ResourceARN=arn, Tags=[{"Key": "aws:x", "Value": "1"}])
    assert info.value.response["Error"]["Code"] == "InvalidParameterValue"


BASE = dict(AlarmName="v", MetricName="M", Namespace="App", Statistic="Sum", Period=60,
            EvaluationPeriods=3, Threshold=1.0, ComparisonOperator="GreaterThanThreshold")

VALIDATION_CASES = [
    (dict(Statistic=None), "InvalidParameterCombination", "Exactly one of Statistic or ExtendedStatistic must be specified."),
    (dict(ExtendedStatistic="p99"), "InvalidParameterCombination", "Exactly one of Statistic or ExtendedStatistic must be specified."),
    (dict(Metrics=[{"Id": "e1", "Expression": "1"}]), "InvalidParameterCombination", None),
    (dict(EvaluationPeriods=0), "ValidationError",
     "1 validation error detected: Value '0' at 'evaluationPeriods' failed to satisfy constraint: Member must have value greater than or equal to 1"),
    (dict(DatapointsToAlarm=4), "ValidationError", "DatapointsToAlarm must be less than or equal to EvaluationPeriods."),
    (dict(EvaluationPeriods=1441), "InvalidParameterCombination",
     "Metrics cannot be checked across more than a day (EvaluationPeriods * Period must be <= 86400)."),
    (dict(Period=45), "InvalidParameterValue", "The parameter Period must be 10, 20, 30 or a multiple of 60."),
    (dict(TreatMissingData="foo"), "InvalidParameterValue", None),
    (dict(EvaluateLowSampleCountPercentile="foo"), "InvalidParameterValue", None),
    (dict(ComparisonOperator="Above"), "ValidationError", None),
    (dict(Threshold=None), "MissingParameter", "The parameter Threshold is required."),
    (dict(Namespace=None), "MissingParameter", "The parameter Namespace is required."),
    (dict(AlarmActions=["not-an-arn"]), "InvalidParameterValue", "The value not-an-arn for parameter AlarmActions.member.1 is invalid."),
    (dict(ExtendedStatistic="TM(5%:95%)", Statistic=None), "InvalidParameterValue", None),
    (dict(WarmUpConfiguration={"WarmUpPeriodDurationInMinutes": 0}), "ValidationError", None),
    (dict(MetricName=None, Namespace=None, Statistic=None, Period=None,
          EvaluationCriteria={"PromQLCriteria": {"Query": "up == 0"}}), "InvalidParameterValue", "PromQL alarms are not supported."),
    (dict(MetricName=None, Namespace=None, Statistic=None, Period=None, Metrics=[
        {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "M"}, "Period": 60, "Stat": "Sum"}},
        {"Id": "e1", "Expression": "m1 * 2"}]), "ValidationError", "Exactly one element of the metrics list should return data."),
    (dict(MetricName=None, Namespace=None, Statistic=None, Period=None,
          Metrics=[{"Id": "e1", "Expression": "SEARCH('{App} M', 'Sum')"}]), "ValidationError", "SEARCH is not supported on Metric Alarms."),
    (dict(ComparisonOperator="GreaterThanUpperThreshold", Threshold=None, ThresholdMetricId=None, MetricName=None,
          Namespace=None, Statistic=None, Period=None, Metrics=[
              {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "M"}, "Period": 60, "Stat": "Sum"}},
              {"Id": "ad1", "Expression": "ANOMALY_DETECTION_BAND(m1)"}]), "MissingParameter", "The parameter ThresholdMetricId is required."),
]


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_put_metric_alarm_validation_errors(server, protocol):
    cw = unvalidated_client(server, protocol)
    for change, code, message in VALIDATION_CASES:
        params = {k: v for k, v in {**BASE, **change}.items() if v is not None}
        with pytest.raises(ClientError) as info:
            cw.put_metric_alarm(**params)
        error = info.value.response
        assert error["Error"]["Code"] == code, (change, error["Error"])
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400, change
        if message is not None:
            assert error["Error"]["Message"] == message, change
    assert cw.describe_alarms()["MetricAlarms"] == []


def test_cli_describe_alarms(server):
    cw = server.client("cloudwatch")
    put(cw, "from-boto3")
    out = json.loads(server.cli("cloudwatch", "describe-alarms", "--alarm-names", "from-boto3").stdout)
    assert [a["AlarmName"] for a in out["MetricAlarms"]] == ["from-boto3"]
    assert out["CompositeAlarms"] == []
