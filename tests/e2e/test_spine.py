"""The spine, end to end: every call is recorded and found again with
LookupEvents, in every protocol, with the right identity and errors."""
import datetime
import json
import os
import stat
import urllib.error
import urllib.request
from unittest import mock

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY, Server

CLOUDWATCH_PROTOCOLS = ["smithy-rpc-v2-cbor", "json", "query"]


def lookup(server, key=None, value=None, **kwargs):
    ct = server.client("cloudtrail")
    if key is not None:
        kwargs["LookupAttributes"] = [{"AttributeKey": key, "AttributeValue": value}]
    events = []
    for page in ct.get_paginator("lookup_events").paginate(**kwargs):
        events.extend(page["Events"])
    return events


def record_of(event):
    return json.loads(event["CloudTrailEvent"])


def call(fn, **kwargs):
    """Makes a call; returns (request id, error code or None)."""
    try:
        response = fn(**kwargs)
        # botocore's CBOR parser leaves RequestId out for operations without
        # output (an empty body); the header is there all the same.
        metadata = response["ResponseMetadata"]
        return metadata.get("RequestId") or metadata["HTTPHeaders"]["x-amzn-requestid"], None
    except ClientError as e:
        return e.response["ResponseMetadata"]["RequestId"], e.response["Error"]["Code"]


def find_by_request_id(server, request_id, event_name):
    matches = [e for e in lookup(server, "EventName", event_name) if record_of(e)["requestID"] == request_id]
    assert len(matches) == 1, f"expected one record for request {request_id}, got {len(matches)}"
    return matches[0]


def test_first_start_generates_private_root_credentials_and_prints_them_once(tmp_path):
    srv = Server(str(tmp_path / "data"), root_from_env=False)
    srv.start()
    try:
        log = srv.log()
        exports = dict(
            line.split(" ", 1)[1].split("=", 1) for line in log.splitlines() if line.startswith("export ")
        )
        assert exports["AWS_ENDPOINT_URL"] == srv.endpoint
        creds_file = tmp_path / "data" / "root-credentials.json"
        assert stat.S_IMODE(os.stat(creds_file).st_mode) == 0o600
        stored = json.loads(creds_file.read_text())
        assert stored["access_key_id"] == exports["AWS_ACCESS_KEY_ID"]
        assert stored["secret_access_key"] == exports["AWS_SECRET_ACCESS_KEY"]
        sts = srv.client("sts", access_key=stored["access_key_id"], secret=stored["secret_access_key"])
        identity = sts.get_caller_identity()
        assert identity["Account"] == stored["account_id"]
        assert identity["Arn"] == f"arn:aws:iam::{stored['account_id']}:root"
    finally:
        srv.stop()
    printed_before = srv.log().count("export AWS_SECRET_ACCESS_KEY")
    srv.start()
    srv.stop()
    assert srv.log().count("export AWS_SECRET_ACCESS_KEY") == printed_before == 1


def test_get_caller_identity_boto3_and_cli(server):
    identity = server.client("sts").get_caller_identity()
    assert identity["Account"] == ACCOUNT
    assert identity["UserId"] == ACCOUNT
    assert identity["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    out = json.loads(server.cli("sts", "get-caller-identity").stdout)
    assert out == {"UserId": ACCOUNT, "Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:root"}
    event = find_by_request_id(server, identity["ResponseMetadata"]["RequestId"], "GetCallerIdentity")
    assert event["EventSource"] == "sts.amazonaws.com"
    assert event["ReadOnly"] == "true"


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_cloudwatch_call_is_recorded_in_every_protocol(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    request_id, code = call(cw.delete_alarms, AlarmNames=["cpu-high", "disk-full"])
    event = find_by_request_id(server, request_id, "DeleteAlarms")
    record = record_of(event)
    assert record["eventVersion"] == "1.11"
    assert record["eventSource"] == "monitoring.amazonaws.com"
    assert record["eventType"] == "AwsApiCall"
    assert record["awsRegion"] == REGION
    assert record["sourceIPAddress"] == "127.0.0.1"
    assert "Boto3/" in record["userAgent"]
    assert record["userIdentity"] == {
        "type": "Root",
        "principalId": ACCOUNT,
        "arn": f"arn:aws:iam::{ACCOUNT}:root",
        "accountId": ACCOUNT,
        "accessKeyId": ACCESS_KEY,
    }
    assert record["requestParameters"] == {"alarmNames": ["cpu-high", "disk-full"]}
    assert record["readOnly"] is False
    assert record["managementEvent"] is True
    assert record["eventCategory"] == "Management"
    assert record["recipientAccountId"] == ACCOUNT
    assert record.get("errorCode") == code
    assert {r["ARN"] for r in record["resources"]} == {
        f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:cpu-high",
        f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:disk-full",
    }
    assert event["Username"] == "root"
    assert event["AccessKeyId"] == ACCESS_KEY
    assert {"ResourceType": "AWS::CloudWatch::Alarm", "ResourceName": "cpu-high"} in event["Resources"]


@pytest.mark.parametrize(
    "service,protocol,bad_secret_code,unknown_key_code",
    [
        ("cloudwatch", "smithy-rpc-v2-cbor", "SignatureDoesNotMatch", "InvalidClientTokenId"),
        ("cloudwatch", "json", "SignatureDoesNotMatch", "InvalidClientTokenId"),
        ("cloudwatch", "query", "SignatureDoesNotMatch", "InvalidClientTokenId"),
        ("logs", None, "InvalidSignatureException", "UnrecognizedClientException"),
        ("cloudtrail", None, "InvalidSignatureException", "UnrecognizedClientException"),
        ("sns", None, "SignatureDoesNotMatch", "InvalidClientTokenId"),
        ("sts", None, "SignatureDoesNotMatch", "InvalidClientTokenId"),
    ],
)
def test_auth_errors_in_each_protocol_are_answered_and_recorded(server, service, protocol, bad_secret_code, unknown_key_code):
    operation = {
        "cloudwatch": ("list_dashboards", "ListDashboards"),
        "logs": ("describe_log_groups", "DescribeLogGroups"),
        "cloudtrail": ("describe_trails", "DescribeTrails"),
        "sns": ("list_topics", "ListTopics"),
        "sts": ("get_caller_identity", "GetCallerIdentity"),
    }[service]

    def attempt(**client_args):
        client = server.client(service, protocol=protocol, **client_args)
        with pytest.raises(ClientError) as info:
            getattr(client, operation[0])()
        return info.value.response

    wrong = attempt(secret="not-the-secret")
    assert wrong["Error"]["Code"] == bad_secret_code
    assert "does not match" in wrong["Error"]["Message"]
    unknown = attempt(access_key="AKIAUNKNOWNKEY000000")
    assert unknown["Error"]["Code"] == unknown_key_code

    an_hour_ago = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(hours=1)
    with mock.patch("botocore.auth.get_current_datetime", return_value=an_hour_ago):
        expired = attempt()
    assert expired["Error"]["Code"] == bad_secret_code
    assert expired["Error"]["Message"].startswith("Signature expired: ")

    for response, key in [(wrong, ACCESS_KEY), (unknown, "AKIAUNKNOWNKEY000000"), (expired, ACCESS_KEY)]:
        event = find_by_request_id(server, response["ResponseMetadata"]["RequestId"], operation[1])
        record = record_of(event)
        assert record["userIdentity"] == {"type": "Unknown", "accessKeyId": key}
        assert record["errorCode"] == response["Error"]["Code"]
        assert record["errorMessage"] == response["Error"]["Message"]


def signed_raw(server, method, path, headers, body, service, query=""):
    request = botocore.awsrequest.AWSRequest(
        method=method, url=server.endpoint + path + (("?" + query) if query else ""), data=body, headers=headers
    )
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), service, REGION).add_auth(request)
    prepared = request.prepare()
    raw = urllib.request.Request(prepared.url, data=body, method=method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(raw, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_unknown_operations_get_the_protocol_error(server):
    status, headers, body = signed_raw(
        server, "POST", "/", {"X-Amz-Target": "Logs_20140328.NoSuchOperation", "Content-Type": "application/x-amz-json-1.1"}, b"{}", "logs"
    )
    assert status == 400
    assert json.loads(body)["__type"] == "UnknownOperationException"
    assert headers["x-amzn-RequestId"]
    status, headers, body = signed_raw(
        server, "POST", "/", {"Content-Type": "application/x-www-form-urlencoded"}, b"Action=NoSuchAction&Version=2010-03-31", "sns"
    )
    assert status == 400
    assert b"<Code>InvalidAction</Code>" in body
    assert b"<RequestId>" + headers["x-amzn-RequestId"].encode() + b"</RequestId>" in body
    status, headers, body = signed_raw(
        server,
        "POST",
        "/service/GraniteServiceVersion20100801/operation/NoSuchOperation",
        {"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor", "Accept": "application/cbor"},
        b"\xa0",
        "monitoring",
    )
    assert status == 400
    assert headers["smithy-protocol"] == "rpc-v2-cbor"
    assert b"UnknownOperationException" in body
    assert headers["x-amzn-query-error"] == "InvalidAction;Sender"
    events = lookup(server, "EventName", "NoSuchOperation")
    assert {record_of(e)["errorCode"] for e in events} == {"UnknownOperationException", "InvalidAction"}


def test_lookup_by_each_attribute(server):
    cw = server.client("cloudwatch")
    delete_id, _ = call(cw.delete_alarms, AlarmNames=["cpu-high"])
    server.client("sts").get_caller_identity()
    logs = server.client("logs")
    group_id, _ = call(logs.create_log_group, logGroupName="/app/web")

    target = find_by_request_id(server, delete_id, "DeleteAlarms")
    checks = {
        "EventId": (target["EventId"], lambda e: e["EventId"] == target["EventId"]),
        "EventName": ("DeleteAlarms", lambda e: e["EventName"] == "DeleteAlarms"),
        "ReadOnly": ("false", lambda e: e["ReadOnly"] == "false"),
        "Username": ("root", lambda e: e["Username"] == "root"),
        "ResourceType": ("AWS::CloudWatch::Alarm", lambda e: any(r["ResourceType"] == "AWS::CloudWatch::Alarm" for r in e["Resources"])),
        "ResourceName": ("cpu-high", lambda e: any(r["ResourceName"] == "cpu-high" for r in e["Resources"])),
        "EventSource": ("monitoring.amazonaws.com", lambda e: e["EventSource"] == "monitoring.amazonaws.com"),
        "AccessKeyId": (ACCESS_KEY, lambda e: e["AccessKeyId"] == ACCESS_KEY),
    }
    for key, (value, predicate) in checks.items():
        events = lookup(server, key, value)
        assert target["EventId"] in {e["EventId"] for e in events}, key
        assert all(predicate(e) for e in events), key
    group = find_by_request_id(server, group_id, "CreateLogGroup")
    assert {"ResourceType": "AWS::Logs::LogGroup", "ResourceName": "/app/web"} in group["Resources"]
    assert [e["EventId"] for e in lookup(server, "ResourceName", "/app/web")] == [group["EventId"]]
    assert lookup(server, "EventName", "NeverCalled") == []
    # ReadOnly=true never returns a write.
    assert all(e["ReadOnly"] == "true" for e in lookup(server, "ReadOnly", "true"))


def test_lookup_time_range_paging_and_order(server):
    sts = server.client("sts")
    for _ in range(7):
        sts.get_caller_identity()
    ct = server.client("cloudtrail")
    pages = list(ct.get_paginator("lookup_events").paginate(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "GetCallerIdentity"}],
        PaginationConfig={"PageSize": 2},
    ))
    events = [e for p in pages for e in p["Events"]]
    assert len(events) == 7
    assert len(pages) == 4
    assert "NextToken" not in pages[-1]
    assert len({e["EventId"] for e in events}) == 7
    keys = [(e["EventTime"], e["EventId"]) for e in events]
    assert keys == sorted(keys, reverse=True)
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    assert ct.lookup_events(StartTime=future)["Events"] == []
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    assert ct.lookup_events(EndTime=past)["Events"] == []
    # CLI, too.
    out = json.loads(server.cli(
        "cloudtrail", "lookup-events", "--lookup-attributes", "AttributeKey=EventName,AttributeValue=GetCallerIdentity"
    ).stdout)
    assert len(out["Events"]) == 7


def test_lookup_errors(server):
    ct = server.client("cloudtrail")

    def code(**kwargs):
        with pytest.raises(ClientError) as info:
            ct.lookup_events(**kwargs)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        return info.value.response["Error"]["Code"]

    two = [{"AttributeKey": "EventName", "AttributeValue": "A"}, {"AttributeKey": "Username", "AttributeValue": "B"}]
    assert code(LookupAttributes=two) == "InvalidLookupAttributesException"
    assert code(LookupAttributes=[{"AttributeKey": "ReadOnly", "AttributeValue": "maybe"}]) == "InvalidLookupAttributesException"
    assert code(MaxResults=51) == "InvalidMaxResultsException"
    now = datetime.datetime.now(datetime.timezone.utc)
    assert code(StartTime=now, EndTime=now - datetime.timedelta(hours=1)) == "InvalidTimeRangeException"
    assert code(NextToken="not-a-token") == "InvalidNextTokenException"
    assert code(EventCategory="management") == "InvalidEventCategoryException"
    assert code(EventCategory="insight", LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "root"}]) == "InvalidLookupAttributesException"
    assert ct.lookup_events(EventCategory="insight")["Events"] == []
    result = server.cli("cloudtrail", "lookup-events", "--max-results", "51", check=False)
    assert result.returncode != 0
    assert "InvalidMaxResultsException" in result.stderr


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_data_events_are_recorded_but_not_looked_up(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    request_id, _ = call(cw.put_metric_data, Namespace="App", MetricData=[{"MetricName": "Latency", "Value": 12.5}])
    assert all(record_of(e)["requestID"] != request_id for e in lookup(server))
    assert lookup(server, "EventName", "PutMetricData") == []


def test_records_survive_a_restart(tmp_path):
    srv = Server(str(tmp_path / "data"))
    srv.start()
    try:
        rid = srv.client("sts").get_caller_identity()["ResponseMetadata"]["RequestId"]
    finally:
        assert srv.stop() == 0
    srv.start()
    try:
        event = find_by_request_id(srv, rid, "GetCallerIdentity")
        assert record_of(event)["requestID"] == rid
    finally:
        srv.stop()
    assert "shutting down: flushing storage" in srv.log()


def test_presigned_urls_verify_and_expire(server):
    sts = server.client("sts")
    url = sts.generate_presigned_url("get_caller_identity", ExpiresIn=900)
    # botocore signs query operations with POST, so the URL is POSTed with an empty body.
    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=30) as r:
        body = r.read()
        request_id = r.headers["x-amzn-RequestId"]
    assert f"<Account>{ACCOUNT}</Account>".encode() in body
    assert find_by_request_id(server, request_id, "GetCallerIdentity")["AccessKeyId"] == ACCESS_KEY

    tampered = url.replace("GetCallerIdentity", "GetCallerIdentitx")
    try:
        urllib.request.urlopen(urllib.request.Request(tampered, data=b"", method="POST"), timeout=30)
        raise AssertionError("a tampered presigned URL must fail")
    except urllib.error.HTTPError as e:
        assert e.code in (400, 403)
        assert b"<Code>SignatureDoesNotMatch</Code>" in e.read()

    an_hour_ago = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(hours=1)
    with mock.patch("botocore.auth.get_current_datetime", return_value=an_hour_ago):
        stale = sts.generate_presigned_url("get_caller_identity", ExpiresIn=60)
    try:
        urllib.request.urlopen(urllib.request.Request(stale, data=b"", method="POST"), timeout=30)
        raise AssertionError("an expired presigned URL must fail")
    except urllib.error.HTTPError as e:
        assert e.code == 400
        assert b"<Code>RequestExpired</Code>" in e.read()


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_gzip_request_bodies_are_decoded(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    cw.meta.config.request_min_compression_size_bytes = 1
    sent = []
    cw.meta.events.register("before-send", lambda request, **_: sent.append(dict(request.headers)))
    request_id, code = call(
        cw.put_metric_data,
        Namespace="App/Gzip",
        MetricData=[{"MetricName": "Latency", "Value": float(i)} for i in range(50)],
    )
    encoding = sent[0].get("Content-Encoding") if sent else None
    encoding = encoding.decode() if isinstance(encoding, bytes) else encoding
    assert encoding == "gzip", "the client must really have compressed"
    # The body decoded: the call reached the handler (not a SerializationException).
    assert code in (None, "NotImplemented")


def test_the_pinned_aws_cli_is_the_one_under_test(server):
    out = server.cli("--version")
    assert "aws-cli/1.46.3" in (out.stdout + out.stderr)
