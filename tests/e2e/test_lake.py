"""CloudTrail Lake (issue 6, §6) against the real binary with boto3: event
data stores, channels, and PutAuditEvents over the cloudtrail-data client,
with the per-event and whole-request errors of §6.4."""
import base64
import hashlib
import json

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def event(uid, **extra):
    data = {
        "version": "1.0",
        "userIdentity": {"type": "CustomUser", "principalId": "alice", "details": {"team": "ci"}},
        "eventSource": "ci.example.com",
        "eventName": "Deploy",
        "eventTime": "2026-02-03T11:20:00Z",
        "UID": uid,
        "recipientAccountId": ACCOUNT,
        "requestParameters": {"service": "web", "version": "1.2.3"},
        "sourceIPAddress": "10.0.0.7",
    }
    data.update(extra)
    return json.dumps(data)


def checksum(text):
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def test_stores_channels_and_put_audit_events(server):
    ct = server.client("cloudtrail")
    data = server.client("cloudtrail-data")
    activity = [{"Name": "external", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["ActivityAuditLog"]}]}]
    store = ct.create_event_data_store(Name="external-events", AdvancedEventSelectors=activity,
                                       RetentionPeriod=90, TagsList=[{"Key": "team", "Value": "sec"}])
    assert store["EventDataStoreArn"].startswith(f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:eventdatastore/")
    assert store["Status"] == "ENABLED" and store["RetentionPeriod"] == 90
    assert store["TerminationProtectionEnabled"] is True and store["MultiRegionEnabled"] is True
    assert store["AdvancedEventSelectors"] == activity
    mgmt = ct.create_event_data_store(Name="management")
    assert mgmt["AdvancedEventSelectors"][0]["FieldSelectors"] == [
        {"Field": "eventCategory", "Equals": ["Management"]}]
    with pytest.raises(ClientError) as e:
        ct.create_event_data_store(Name="external-events")
    assert code(e) == "EventDataStoreAlreadyExistsException"
    for bad in [dict(Name="bad name!"), dict(Name="ok-name", BillingMode="FIXED_RETENTION_PRICING", RetentionPeriod=3000),
                dict(Name="ok-name", AdvancedEventSelectors=activity + [{"FieldSelectors": [
                    {"Field": "eventCategory", "Equals": ["Management"]}]}])]:
        with pytest.raises(ClientError) as e:
            ct.create_event_data_store(**bad)
        assert code(e) in ("InvalidParameterException", "InvalidEventSelectorsException"), bad
    names = sorted(s["Name"] for s in ct.list_event_data_stores()["EventDataStores"])
    assert names == ["external-events", "management"]
    got = ct.get_event_data_store(EventDataStore=store["EventDataStoreArn"])
    assert got["Name"] == "external-events"
    with pytest.raises(ClientError) as e:
        ct.get_event_data_store(EventDataStore=f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:eventdatastore/nope")
    assert code(e) == "EventDataStoreNotFoundException"

    with pytest.raises(ClientError) as e:
        ct.create_channel(Name="ci-channel", Source="Custom",
                          Destinations=[{"Type": "EVENT_DATA_STORE", "Location": mgmt["EventDataStoreArn"]}])
    assert code(e) == "InvalidEventDataStoreCategoryException"
    channel = ct.create_channel(Name="ci-channel", Source="Custom",
                                Destinations=[{"Type": "EVENT_DATA_STORE", "Location": store["EventDataStoreArn"]}])
    arn = channel["ChannelArn"]
    assert arn.startswith(f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:channel/")
    assert ct.get_channel(Channel=arn)["Destinations"] == [
        {"Type": "EVENT_DATA_STORE", "Location": store["EventDataStoreArn"]}]
    assert ct.list_channels()["Channels"] == [{"ChannelArn": arn, "Name": "ci-channel"}]
    ct.add_tags(ResourceId=arn, TagsList=[{"Key": "owner", "Value": "ci"}])
    tags = ct.list_tags(ResourceIdList=[store["EventDataStoreArn"], arn])["ResourceTagList"]
    assert tags == [{"ResourceId": store["EventDataStoreArn"], "TagsList": [{"Key": "team", "Value": "sec"}]},
                    {"ResourceId": arn, "TagsList": [{"Key": "owner", "Value": "ci"}]}]
    with pytest.raises(ClientError) as e:
        ct.list_tags(ResourceIdList=[f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:channel/nope"])
    assert code(e) == "ResourceNotFoundException"

    good = event("req-1")
    answer = data.put_audit_events(channelArn=arn, auditEvents=[
        {"id": "one", "eventData": good, "eventDataChecksum": checksum(good)},
        {"id": "two", "eventData": good, "eventDataChecksum": "AAAA"},
        {"id": "three", "eventData": event("req-3", recipientAccountId="999999999999")},
        {"id": "four", "eventData": event("req-4", eventName="x" * 1025)},
        {"id": "five", "eventData": "{not json"},
    ])
    assert [s["id"] for s in answer["successful"]] == ["one"]
    assert len(answer["successful"][0]["eventID"]) == 36
    failed = {f["id"]: f["errorCode"] for f in answer["failed"]}
    assert failed == {"two": "InvalidChecksum", "three": "InvalidRecipient", "four": "FieldTooLong",
                      "five": "InvalidData"}
    with pytest.raises(ClientError) as e:
        data.put_audit_events(channelArn=arn, auditEvents=[{"id": "a", "eventData": good},
                                                           {"id": "a", "eventData": good}])
    assert code(e) == "DuplicatedAuditEventId"
    with pytest.raises(ClientError) as e:
        data.put_audit_events(channelArn=f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:channel/nope",
                              auditEvents=[{"id": "a", "eventData": good}])
    assert code(e) == "ChannelNotFound"
    with pytest.raises(ClientError) as e:
        data.put_audit_events(channelArn=f"arn:aws:cloudtrail:{REGION}:999999999999:channel/x",
                              auditEvents=[{"id": "a", "eventData": good}])
    assert code(e) == "ChannelInsufficientPermission"

    # External events never reach LookupEvents; the PutAuditEvents call is a
    # data event, so it is not there either.
    found = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "Deploy"}])
    assert found["Events"] == []

    with pytest.raises(ClientError) as e:
        ct.delete_event_data_store(EventDataStore=store["EventDataStoreArn"])
    assert code(e) == "EventDataStoreTerminationProtectedException"
    ct.update_event_data_store(EventDataStore=store["EventDataStoreArn"], TerminationProtectionEnabled=False)
    with pytest.raises(ClientError) as e:
        ct.delete_event_data_store(EventDataStore=store["EventDataStoreArn"])
    assert code(e) == "EventDataStoreHasOngoingImportException"
    ct.delete_channel(Channel=arn)
    ct.delete_event_data_store(EventDataStore=store["EventDataStoreArn"])
    assert [s["Name"] for s in ct.list_event_data_stores()["EventDataStores"]] == ["management"]


def wait_finished(ct, qid, store):
    import time
    deadline = time.time() + 60
    while time.time() < deadline:
        d = ct.describe_query(QueryId=qid, EventDataStore=store)
        if d["QueryStatus"] not in ("QUEUED", "RUNNING"):
            return d
        time.sleep(0.2)
    raise AssertionError("query did not finish")


def test_sql_over_event_data_stores(server):
    ct = server.client("cloudtrail")
    data = server.client("cloudtrail-data")
    cw = server.client("cloudwatch")
    mgmt = ct.create_event_data_store(Name="management", TerminationProtectionEnabled=False)
    store_id = mgmt["EventDataStoreArn"].rsplit("/", 1)[1]
    for i in range(3):
        cw.put_metric_alarm(AlarmName=f"q-{i}", Namespace="App", MetricName="M", Statistic="Sum", Period=60,
                            EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold")
    cw.describe_alarms()
    qid = ct.start_query(QueryStatement=(
        f"SELECT eventName, COUNT(*) AS calls FROM {store_id} WHERE eventSource = 'monitoring.amazonaws.com' "
        "GROUP BY eventName ORDER BY calls DESC, eventName"))["QueryId"]
    described = wait_finished(ct, qid, mgmt["EventDataStoreArn"])
    assert described["QueryStatus"] == "FINISHED", described
    assert described["QueryStatistics"]["EventsScanned"] >= 5
    rows = ct.get_query_results(QueryId=qid)["QueryResultRows"]
    counts = {r[0]["eventname"]: r[1]["calls"] for r in rows}
    assert counts["PutMetricAlarm"] == "3" and counts["DescribeAlarms"] == "1", rows

    qid = ct.start_query(QueryStatement=(
        f"SELECT eventTime, userIdentity.arn, element_at(requestParameters, 'alarmName') AS alarm "
        f"FROM {store_id} WHERE eventName = 'PutMetricAlarm' ORDER BY alarm"))["QueryId"]
    wait_finished(ct, qid, mgmt["EventDataStoreArn"])
    first = ct.get_query_results(QueryId=qid, MaxQueryResults=2)
    assert [r[2]["alarm"] for r in first["QueryResultRows"]] == ["q-0", "q-1"]
    assert first["QueryStatistics"]["TotalResultsCount"] == 3
    rest = ct.get_query_results(QueryId=qid, NextToken=first["NextToken"])
    assert [r[2]["alarm"] for r in rest["QueryResultRows"]] == ["q-2"]
    assert rest["QueryResultRows"][0][1]["arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    assert len(rest["QueryResultRows"][0][0]["eventtime"]) == len("2026-02-03 11:20:00.000")
    with pytest.raises(ClientError) as e:
        ct.cancel_query(QueryId=qid)
    assert code(e) == "InactiveQueryException"
    listed = ct.list_queries(EventDataStore=mgmt["EventDataStoreArn"])["Queries"]
    assert {q["QueryId"] for q in listed} >= {qid}

    for bad in [f"DROP TABLE {store_id}", f"SELECT nope FROM {store_id}", "SELECT 1",
                f"DELETE FROM {store_id}"]:
        with pytest.raises(ClientError) as e:
            ct.start_query(QueryStatement=bad)
        assert code(e) == "InvalidQueryStatementException", bad
    with pytest.raises(ClientError) as e:
        ct.start_query(QueryStatement="SELECT * FROM 00000000-0000-0000-0000-000000000000")
    assert code(e) == "EventDataStoreNotFoundException"
    with pytest.raises(ClientError) as e:
        ct.get_query_results(QueryId="00000000-0000-0000-0000-000000000000")
    assert code(e) == "QueryIdNotFoundException"

    # External events through a channel, queried through eventData.
    activity = ct.create_event_data_store(Name="external", TerminationProtectionEnabled=False,
                                          AdvancedEventSelectors=[{"FieldSelectors": [
                                              {"Field": "eventCategory", "Equals": ["ActivityAuditLog"]}]}])
    activity_id = activity["EventDataStoreArn"].rsplit("/", 1)[1]
    channel = ct.create_channel(Name="ci-events", Source="Custom", Destinations=[
        {"Type": "EVENT_DATA_STORE", "Location": activity["EventDataStoreArn"]}])["ChannelArn"]
    data.put_audit_events(channelArn=channel, auditEvents=[
        {"id": f"e{i}", "eventData": event(f"uid-{i}", eventName=name)}
        for i, name in enumerate(["Deploy", "Deploy", "Rollback"])])
    qid = ct.start_query(QueryStatement=(
        f"SELECT eventData.eventName, eventData.userIdentity, metadata.channelArn, COUNT(*) AS n FROM {activity_id} "
        "WHERE eventData.eventSource = 'ci.example.com' GROUP BY 1, 2, 3 ORDER BY n DESC"))["QueryId"]
    wait_finished(ct, qid, activity["EventDataStoreArn"])
    rows = ct.get_query_results(QueryId=qid)["QueryResultRows"]
    assert [(list(r[0].values())[0], r[3]["n"]) for r in rows] == [("Deploy", "2"), ("Rollback", "1")], rows
    assert list(rows[0][2].values())[0] == channel
    assert json.loads(list(rows[0][1].values())[0])["principalId"] == "alice"


def test_cancel_a_running_query(tmp_path):
    from conftest import Server
    server = Server(str(tmp_path / "data"), extra_env={"TRAILWATCH_INSIGHTS_DELAY_MS": "3000"}).start()
    try:
        ct = server.client("cloudtrail")
        store = ct.create_event_data_store(Name="management", TerminationProtectionEnabled=False)
        store_id = store["EventDataStoreArn"].rsplit("/", 1)[1]
        qid = ct.start_query(QueryStatement=f"SELECT count(*) FROM {store_id}")["QueryId"]
        assert ct.describe_query(QueryId=qid)["QueryStatus"] == "RUNNING"
        assert ct.get_query_results(QueryId=qid)["QueryResultRows"] == []
        cancelled = ct.cancel_query(QueryId=qid)
        assert cancelled == {"QueryId": qid, "QueryStatus": "CANCELLED", **{"ResponseMetadata": cancelled["ResponseMetadata"]}}
        import time
        time.sleep(3.5)
        assert ct.describe_query(QueryId=qid)["QueryStatus"] == "CANCELLED"
        with pytest.raises(ClientError) as e:
            ct.cancel_query(QueryId=qid)
        assert code(e) == "InactiveQueryException"
        # Another query runs to the end.
        qid = ct.start_query(QueryStatement=f"SELECT count(*) AS n FROM {store_id}")["QueryId"]
        done = wait_finished(ct, qid, store["EventDataStoreArn"])
        assert done["QueryStatus"] == "FINISHED"
        assert int(ct.get_query_results(QueryId=qid)["QueryResultRows"][0][0]["n"]) >= 1
    finally:
        server.stop()
