"""CloudWatch dashboards end to end in all three protocols: put, get, list,
delete (partial failure), body validation, audit records, restart."""
import json

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, Server

CLOUDWATCH_PROTOCOLS = ["smithy-rpc-v2-cbor", "json", "query"]
BODY = json.dumps({"widgets": [{"type": "metric", "x": 0, "y": 0, "width": 12, "height": 6, "properties": {
    "region": "us-east-1", "metrics": [["AWS/EC2", "CPUUtilization", "InstanceId", "i-1"], ["...", "i-2"]]}}]})


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_dashboard_lifecycle(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    assert cw.put_dashboard(DashboardName="web-1", DashboardBody=BODY)["DashboardValidationMessages"] == []
    cw.put_dashboard(DashboardName="web-2", DashboardBody='{"widgets":[]}')
    cw.put_dashboard(DashboardName="db", DashboardBody='{"widgets":[]}')
    got = cw.get_dashboard(DashboardName="web-1")
    assert got["DashboardBody"] == BODY
    assert got["DashboardArn"] == f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/web-1"
    entries = cw.list_dashboards(DashboardNamePrefix="web")["DashboardEntries"]
    assert [(e["DashboardName"], e["Size"]) for e in entries] == [("web-1", len(BODY)), ("web-2", 14)]

    with pytest.raises(ClientError) as info:
        cw.put_dashboard(DashboardName="bad", DashboardBody='{"widgets":[{"type":"text","x":30,"properties":{}}]}')
    assert info.value.response["Error"]["Code"] == "InvalidParameterInput"
    assert info.value.response["Error"]["Message"].startswith("The dashboard body is invalid, there are 2 validation errors:")
    with pytest.raises(ClientError) as info:
        cw.put_dashboard(DashboardName="bad name", DashboardBody='{"widgets":[]}')
    assert info.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as info:
        cw.get_dashboard(DashboardName="nope")
    assert info.value.response["Error"]["Code"] == "ResourceNotFound"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    # One unknown name: the call fails, the known ones are deleted anyway.
    with pytest.raises(ClientError) as info:
        cw.delete_dashboards(DashboardNames=["web-2", "nope"])
    assert info.value.response["Error"]["Code"] == "ResourceNotFound"
    assert [e["DashboardName"] for e in cw.list_dashboards()["DashboardEntries"]] == ["db", "web-1"]
    cw.delete_dashboards(DashboardNames=["db"])

    # Each change is in the audit trail with its resource; the partial delete too.
    ct = server.client("cloudtrail")
    events = ct.lookup_events(LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": "web-2"}])["Events"]
    # Same-second events are ordered by eventID (spec §4), so look them up by name.
    by_name = {e["EventName"]: e for e in events}
    assert sorted(by_name) == ["DeleteDashboards", "PutDashboard"] and len(events) == 2
    record = json.loads(by_name["PutDashboard"]["CloudTrailEvent"])
    assert record["responseElements"] == {"dashboardValidationMessages": []}
    assert record["resources"] == [{"accountId": ACCOUNT, "type": "AWS::CloudWatch::Dashboard", "ARN": f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/web-2"}]
    assert json.loads(by_name["DeleteDashboards"]["CloudTrailEvent"])["errorCode"] == "ResourceNotFound"


def test_dashboards_survive_restart_and_crash(tmp_path):
    srv = Server(str(tmp_path / "data"))
    srv.start()
    srv.client("cloudwatch").put_dashboard(DashboardName="kept", DashboardBody=BODY)
    srv.stop(sig=9)  # SIGKILL: the change must come back from the WAL
    srv.allowed_warnings.append("torn tail")
    srv.start()
    try:
        assert srv.client("cloudwatch").get_dashboard(DashboardName="kept")["DashboardBody"] == BODY
        out = json.loads(srv.cli("cloudwatch", "list-dashboards").stdout)
        assert [e["DashboardName"] for e in out["DashboardEntries"]] == ["kept"]
    finally:
        srv.stop()


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_tagging_dashboards(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    arn = f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/ops"
    cw.put_dashboard(DashboardName="ops", DashboardBody='{"widgets":[]}', Tags=[{"Key": "team", "Value": "sre"}])
    # Tags on PutDashboard count only at creation.
    cw.put_dashboard(DashboardName="ops", DashboardBody='{"widgets":[]}', Tags=[{"Key": "ignored", "Value": "x"}])
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "team", "Value": "sre"}]
    cw.tag_resource(ResourceARN=arn, Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "platform"}])
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == [
        {"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "platform"},
    ]
    cw.untag_resource(ResourceARN=arn, TagKeys=["team"])
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "env", "Value": "prod"}]
    with pytest.raises(ClientError) as info:
        cw.tag_resource(ResourceARN=arn, Tags=[{"Key": "aws:reserved", "Value": "x"}])
    assert info.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as info:
        cw.list_tags_for_resource(ResourceARN=f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/missing")
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # Deleting the dashboard deletes its tags; recreating starts afresh.
    cw.delete_dashboards(DashboardNames=["ops"])
    cw.put_dashboard(DashboardName="ops", DashboardBody='{"widgets":[]}')
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == []
