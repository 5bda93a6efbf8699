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
