"""Alarms that really fire (issue 5), in real time against the real binary:
an alarm on a 10-second high-resolution metric goes OK -> ALARM -> OK as
boto3 publishes values; a local HTTP receiver gets the SNS confirmation and
both alarm notifications, each verified against the certificate the server
serves; DescribeAlarmHistory shows both transitions and their actions."""
import json
import threading
import time
import urllib.request

from conftest import ACCOUNT, REGION
from test_sns import CONFIRMATION_FIELDS, NOTIFICATION_FIELDS, receiver, verify  # noqa: F401


class Publisher:
    """Puts the current value of a high-resolution metric every second."""

    def __init__(self, cloudwatch, value):
        self.cloudwatch = cloudwatch
        self.value = value
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.is_set():
            self.cloudwatch.put_metric_data(
                Namespace="App",
                MetricData=[{"MetricName": "Latency", "Value": self.value, "StorageResolution": 1}],
            )
            self.stopped.wait(1.0)

    def stop(self):
        self.stopped.set()
        self.thread.join()


def wait_for_state(cloudwatch, name, state, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        alarm = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
        if alarm["StateValue"] == state:
            return alarm
        time.sleep(0.5)
    raise AssertionError(f"{name} did not reach {state}: {alarm['StateValue']} ({alarm['StateReason']})")


def alarm_args(name, actions):
    return dict(
        AlarmName=name,
        Namespace="App",
        MetricName="Latency",
        Statistic="Maximum",
        Period=10,
        EvaluationPeriods=1,
        Threshold=50.0,
        ComparisonOperator="GreaterThanThreshold",
        AlarmActions=actions,
        OKActions=actions,
    )


def test_high_resolution_alarm_fires_and_recovers_with_signed_notifications(server, receiver):
    sns = server.client("sns")
    cloudwatch = server.client("cloudwatch")
    topic = sns.create_topic(Name="pager")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=receiver.url)
    headers, body = receiver.next()
    confirmation = json.loads(body)
    assert confirmation["Type"] == "SubscriptionConfirmation"
    verify(confirmation, CONFIRMATION_FIELDS)
    urllib.request.urlopen(confirmation["SubscribeURL"], timeout=10).read()

    publisher = Publisher(cloudwatch, 1.0)
    try:
        # Created without actions, it settles in OK; the update that adds
        # the actions keeps the state, so only the next transitions notify.
        cloudwatch.put_metric_alarm(**alarm_args("latency-high", []))
        wait_for_state(cloudwatch, "latency-high", "OK", timeout=40)
        cloudwatch.put_metric_alarm(**alarm_args("latency-high", [topic]))
        assert wait_for_state(cloudwatch, "latency-high", "OK")["AlarmActions"] == [topic]

        breach_at = time.time()
        publisher.value = 99.0
        alarmed = wait_for_state(cloudwatch, "latency-high", "ALARM", timeout=40)
        assert alarmed["StateReason"].startswith("Threshold Crossed: 1 out of the last 1 datapoints [99.0 (")
        assert alarmed["StateReason"].endswith(
            "was greater than the threshold (50.0) (minimum 1 datapoint for OK -> ALARM transition)."
        )
        reason_data = json.loads(alarmed["StateReasonData"])
        assert reason_data["period"] == 10 and reason_data["statistic"] == "Maximum"
        assert reason_data["recentDatapoints"] == [99.0]

        headers, body = receiver.next(timeout=30)
        first_latency = time.time() - breach_at
        publisher.value = 1.0
        wait_for_state(cloudwatch, "latency-high", "OK", timeout=40)
        headers2, body2 = receiver.next(timeout=30)
    finally:
        publisher.stop()

    notes = []
    for h, b in [(headers, body), (headers2, body2)]:
        note = json.loads(b)
        assert note["Type"] == "Notification"
        assert h["x-amz-sns-message-type"] == "Notification"
        assert h["x-amz-sns-topic-arn"] == topic
        assert h["x-amz-sns-subscription-arn"].startswith(topic + ":")
        verify(note, NOTIFICATION_FIELDS)
        notes.append(note)
    assert notes[0]["Subject"] == 'ALARM: "latency-high" in US East (N. Virginia)'
    assert notes[1]["Subject"] == 'OK: "latency-high" in US East (N. Virginia)'
    first, second = (json.loads(n["Message"]) for n in notes)
    assert (first["OldStateValue"], first["NewStateValue"]) == ("OK", "ALARM")
    assert (second["OldStateValue"], second["NewStateValue"]) == ("ALARM", "OK")
    assert first["AlarmName"] == "latency-high"
    assert first["AWSAccountId"] == ACCOUNT
    assert first["Region"] == "US East (N. Virginia)"
    assert first["AlarmArn"] == f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:latency-high"
    assert first["NewStateReason"] == alarmed["StateReason"]
    assert first["AlarmActions"] == [topic] and first["OKActions"] == [topic]
    trigger = first["Trigger"]
    assert trigger["MetricName"] == "Latency" and trigger["Namespace"] == "App"
    assert trigger["StatisticType"] == "Statistic" and trigger["Statistic"] == "MAXIMUM"
    assert trigger["Period"] == 10 and trigger["Threshold"] == 50.0
    assert trigger["ComparisonOperator"] == "GreaterThanThreshold"
    # A breaching value lands in a 10-second bucket that is evaluated when it
    # closes: the notification follows within about two buckets.
    assert first_latency < 30, first_latency

    history = cloudwatch.describe_alarm_history(AlarmName="latency-high", HistoryItemType="StateUpdate")
    summaries = [h["HistorySummary"] for h in history["AlarmHistoryItems"]]
    assert summaries[:2] == ["Alarm updated from ALARM to OK", "Alarm updated from OK to ALARM"]
    assert summaries[-1] == "Alarm updated from INSUFFICIENT_DATA to OK"
    actions = cloudwatch.describe_alarm_history(AlarmName="latency-high", HistoryItemType="Action")
    assert [h["HistorySummary"] for h in actions["AlarmHistoryItems"]] == [
        f"Successfully executed action {topic}"
    ] * 2
    data = json.loads(actions["AlarmHistoryItems"][0]["HistoryData"])
    assert data["actionState"] == "Succeeded" and data["notificationResource"] == topic


def test_set_alarm_state_runs_actions_and_bad_actions_fail_in_history(server, receiver):
    sns = server.client("sns")
    cloudwatch = server.client("cloudwatch")
    topic = sns.create_topic(Name="ops")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=receiver.url)
    confirmation = json.loads(receiver.next()[1])
    urllib.request.urlopen(confirmation["SubscribeURL"], timeout=10).read()
    missing = f"arn:aws:sns:{REGION}:{ACCOUNT}:absent"
    args = alarm_args("manual", [topic, missing])
    # A minute alarm without data that ignores missing data: scheduled
    # evaluations keep what SetAlarmState sets.
    args["Period"] = 60
    args["TreatMissingData"] = "ignore"
    cloudwatch.put_metric_alarm(**args)
    # No data: the first evaluation leaves INSUFFICIENT_DATA, so nothing ran.
    assert cloudwatch.describe_alarm_history(AlarmName="manual", HistoryItemType="Action")["AlarmHistoryItems"] == []
    cloudwatch.set_alarm_state(AlarmName="manual", StateValue="ALARM", StateReason="drill")
    note = json.loads(receiver.next()[1])
    verify(note, NOTIFICATION_FIELDS)
    message = json.loads(note["Message"])
    assert (message["OldStateValue"], message["NewStateValue"], message["NewStateReason"]) == (
        "INSUFFICIENT_DATA",
        "ALARM",
        "drill",
    )
    # The same state again is no transition: no second message.
    cloudwatch.set_alarm_state(AlarmName="manual", StateValue="ALARM", StateReason="again")
    actions = cloudwatch.describe_alarm_history(AlarmName="manual", HistoryItemType="Action")["AlarmHistoryItems"]
    assert sorted(h["HistorySummary"] for h in actions) == [
        f"Failed to execute action {missing}. Reason: Topic {missing} does not exist.",
        f"Successfully executed action {topic}",
    ]
    failed = next(json.loads(h["HistoryData"]) for h in actions if h["HistorySummary"].startswith("Failed"))
    assert failed["actionState"] == "Failed"
    # Disabled actions: the transition is recorded, nothing is sent.
    cloudwatch.disable_alarm_actions(AlarmNames=["manual"])
    cloudwatch.set_alarm_state(AlarmName="manual", StateValue="OK", StateReason="quiet")
    time.sleep(1.0)
    assert receiver.messages.empty()
    states = cloudwatch.describe_alarm_history(AlarmName="manual", HistoryItemType="StateUpdate")["AlarmHistoryItems"]
    assert states[0]["HistorySummary"] == "Alarm updated from ALARM to OK"
