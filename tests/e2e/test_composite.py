"""Composite alarms end to end (issue 5, spec/cloudwatch.md §8): validation,
DescribeAlarms with AlarmTypes and the children/parents modes, a composite
following its children (and a composite of a composite) when their states
change, history, DeleteAlarms rules, signed notifications of a composite's
transition, and an ActionsSuppressor holding actions."""
import json
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION
from test_sns import NOTIFICATION_FIELDS, receiver, verify  # noqa: F401

CLOUDWATCH_PROTOCOLS = ["query", "json", "smithy-rpc-v2-cbor"]
ARN = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:"


def metric_alarm(cw, name):
    # Without data and ignoring missing data, scheduled evaluations keep the
    # states the tests set with SetAlarmState.
    cw.put_metric_alarm(
        AlarmName=name, Namespace="App", MetricName=name, Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="ignore",
    )


def error(call):
    with pytest.raises(ClientError) as e:
        call()
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"], e.value.response[
        "ResponseMetadata"
    ]["HTTPStatusCode"]


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_composite_follows_children_with_history_and_describe_modes(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    for name in ["cpu", "disk", "deploy"]:
        metric_alarm(cw, name)
    cw.set_alarm_state(AlarmName="deploy", StateValue="ALARM", StateReason="deploying")

    code, message, status = error(lambda: cw.put_composite_alarm(AlarmName="bad", AlarmRule="ALARM(cpu) OR ALARM(nope)"))
    assert (code, status) == ("ValidationError", 400)
    assert message == "Could not save the composite alarm as alarms [nope] in the alarm rule do not exist"
    code, _, _ = error(lambda: cw.put_composite_alarm(AlarmName="bad", AlarmRule="ALARM(cpu) AND"))
    assert code == "ValidationError"
    code, _, _ = error(
        lambda: cw.put_composite_alarm(AlarmName="bad", AlarmRule="ALARM(cpu)", ActionsSuppressor="deploy")
    )
    assert code == "ValidationError"
    code, _, _ = error(lambda: cw.put_composite_alarm(AlarmName="cpu", AlarmRule="TRUE"))
    assert code == "ValidationError"

    cw.put_composite_alarm(
        AlarmName="host", AlarmRule="ALARM(cpu) OR ALARM(disk)", AlarmDescription="either",
        Tags=[{"Key": "team", "Value": "sre"}],
    )
    cw.put_composite_alarm(AlarmName="page", AlarmRule=f'ALARM(host) AND NOT ALARM("{ARN}deploy")')
    # Evaluated at once: both rules are false.
    out = cw.describe_alarms(AlarmTypes=["CompositeAlarm"])
    assert out["MetricAlarms"] == []
    states = {c["AlarmName"]: c["StateValue"] for c in out["CompositeAlarms"]}
    assert states == {"host": "OK", "page": "OK"}
    host = out["CompositeAlarms"][0]
    assert host["AlarmRule"] == "ALARM(cpu) OR ALARM(disk)" and host["AlarmArn"] == ARN + "host"
    assert cw.list_tags_for_resource(ResourceARN=ARN + "host")["Tags"] == [{"Key": "team", "Value": "sre"}]
    # Without AlarmTypes only metric alarms are listed; both kinds page jointly by name.
    assert [a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]] == ["cpu", "deploy", "disk"]
    both = cw.describe_alarms(AlarmTypes=["MetricAlarm", "CompositeAlarm"], MaxRecords=2)
    assert [a["AlarmName"] for a in both["MetricAlarms"]] == ["cpu", "deploy"]
    assert both["CompositeAlarms"] == []
    rest = cw.describe_alarms(AlarmTypes=["MetricAlarm", "CompositeAlarm"], MaxRecords=2, NextToken=both["NextToken"])
    assert [a["AlarmName"] for a in rest["MetricAlarms"]] == ["disk"]
    assert [a["AlarmName"] for a in rest["CompositeAlarms"]] == ["host"]
    last = cw.describe_alarms(AlarmTypes=["MetricAlarm", "CompositeAlarm"], MaxRecords=2, NextToken=rest["NextToken"])
    assert [a["AlarmName"] for a in last["CompositeAlarms"]] == ["page"] and "NextToken" not in last

    children = cw.describe_alarms(ChildrenOfAlarmName="page")
    assert [c["AlarmName"] for c in children["MetricAlarms"]] == ["deploy"]
    assert [c["AlarmName"] for c in children["CompositeAlarms"]] == ["host"]
    assert set(children["MetricAlarms"][0]) == {"AlarmName", "AlarmArn", "StateValue", "StateUpdatedTimestamp"}
    parents = cw.describe_alarms(ParentsOfAlarmName="cpu")
    assert parents["CompositeAlarms"] == [{"AlarmName": "host", "AlarmArn": ARN + "host"}]

    # A child changes: the composite follows, and a composite of it too.
    cw.set_alarm_state(AlarmName="cpu", StateValue="ALARM", StateReason="hot")
    states = {c["AlarmName"]: c for c in cw.describe_alarms(AlarmTypes=["CompositeAlarm"])["CompositeAlarms"]}
    assert states["host"]["StateValue"] == "ALARM" and states["page"]["StateValue"] == "OK"
    assert states["host"]["StateReason"].startswith(f"{ARN}cpu transitioned to ALARM at ")
    reason_data = json.loads(states["host"]["StateReasonData"])
    assert reason_data["triggeringAlarms"][0]["arn"] == ARN + "cpu"
    cw.set_alarm_state(AlarmName="deploy", StateValue="OK", StateReason="done")
    page = cw.describe_alarms(AlarmNames=["page"], AlarmTypes=["CompositeAlarm"])["CompositeAlarms"][0]
    assert page["StateValue"] == "ALARM"
    history = cw.describe_alarm_history(AlarmName="host", AlarmTypes=["CompositeAlarm"])["AlarmHistoryItems"]
    assert [h["HistorySummary"] for h in history] == [
        "Alarm updated from OK to ALARM",
        "Alarm updated from INSUFFICIENT_DATA to OK",
        'Alarm "host" created',
    ]
    assert {h["AlarmType"] for h in history} == {"CompositeAlarm"}

    # SetAlarmState on a composite holds until a child changes.
    cw.set_alarm_state(AlarmName="host", StateValue="OK", StateReason="forced")
    assert cw.describe_alarms(AlarmNames=["host"], AlarmTypes=["CompositeAlarm"])["CompositeAlarms"][0]["StateValue"] == "OK"

    # DeleteAlarms: a child still named by a composite cannot go; two composites at once neither.
    code, _, status = error(lambda: cw.delete_alarms(AlarmNames=["cpu"]))
    assert (code, status) == ("ResourceConflict", 409)
    code, _, _ = error(lambda: cw.delete_alarms(AlarmNames=["host", "page"]))
    assert code == "ValidationError"
    cw.delete_alarms(AlarmNames=["page"])
    cw.delete_alarms(AlarmNames=["host"])
    cw.delete_alarms(AlarmNames=["cpu", "disk"])
    assert cw.describe_alarms(AlarmTypes=["CompositeAlarm"])["CompositeAlarms"] == []


def test_composite_notification_and_suppressor(server, receiver):
    cw = server.client("cloudwatch")
    sns = server.client("sns")
    topic = sns.create_topic(Name="composite")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=receiver.url)
    urllib.request.urlopen(json.loads(receiver.next()[1])["SubscribeURL"], timeout=10).read()
    for name in ["api", "maintenance"]:
        metric_alarm(cw, name)
    cw.set_alarm_state(AlarmName="api", StateValue="OK", StateReason="fine")
    cw.set_alarm_state(AlarmName="maintenance", StateValue="OK", StateReason="none")
    cw.put_composite_alarm(AlarmName="service", AlarmRule="ALARM(api)", AlarmActions=[topic])
    cw.set_alarm_state(AlarmName="api", StateValue="ALARM", StateReason="down")
    note = json.loads(receiver.next()[1])
    verify(note, NOTIFICATION_FIELDS)
    assert note["Subject"] == 'ALARM: "service" in US East (N. Virginia)'
    message = json.loads(note["Message"])
    assert (message["OldStateValue"], message["NewStateValue"]) == ("OK", "ALARM")
    assert message["AlarmRule"] == "ALARM(api)"
    assert message["TriggeringChildren"][0]["Arn"] == ARN + "api"

    # With a suppressor in ALARM, the next transition's actions are suppressed.
    cw.set_alarm_state(AlarmName="api", StateValue="OK", StateReason="up")
    cw.put_composite_alarm(
        AlarmName="service", AlarmRule="ALARM(api)", AlarmActions=[topic], ActionsSuppressor="maintenance",
        ActionsSuppressorWaitPeriod=1, ActionsSuppressorExtensionPeriod=1,
    )
    cw.set_alarm_state(AlarmName="maintenance", StateValue="ALARM", StateReason="window")
    service = cw.describe_alarms(AlarmNames=["service"], AlarmTypes=["CompositeAlarm"])["CompositeAlarms"][0]
    assert service["ActionsSuppressedBy"] == "Alarm"
    assert service["ActionsSuppressor"] == "maintenance"
    assert (service["ActionsSuppressorWaitPeriod"], service["ActionsSuppressorExtensionPeriod"]) == (1, 1)
    cw.set_alarm_state(AlarmName="api", StateValue="ALARM", StateReason="down again")
    time.sleep(2.0)
    assert receiver.messages.empty()
    # Suppressor quiet again: a transition waits its 1-second WaitPeriod, then notifies.
    cw.set_alarm_state(AlarmName="maintenance", StateValue="OK", StateReason="over")
    time.sleep(1.5)
    cw.set_alarm_state(AlarmName="api", StateValue="OK", StateReason="up")
    cw.set_alarm_state(AlarmName="api", StateValue="ALARM", StateReason="down a third time")
    held = cw.describe_alarms(AlarmNames=["service"], AlarmTypes=["CompositeAlarm"])["CompositeAlarms"][0]
    assert held["ActionsSuppressedBy"] == "WaitPeriod"
    assert held["ActionsSuppressedReason"] == "Alarm is in WaitPeriod"
    note = json.loads(receiver.next(timeout=30)[1])
    verify(note, NOTIFICATION_FIELDS)
    assert json.loads(note["Message"])["NewStateValue"] == "ALARM"
