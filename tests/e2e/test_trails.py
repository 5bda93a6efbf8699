"""Trails (issue 6) against the real binary: the trail API and its errors,
delivered log files that hold exactly the calls made while the trail logged
(across a graceful restart, a crash and a StopLogging/StartLogging gap), and
the unmodified `aws cloudtrail validate-logs` accepting the digest chain, then
rejecting it after a log file is edited or deleted."""
import gzip
import json
import os
import signal
import time
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY, Server
from test_sns import receiver  # noqa: F401

FAST = {
    "TRAILWATCH_TRAIL_DELIVERY_SECS": "1",
    "TRAILWATCH_DIGEST_INTERVAL_SECS": "4",
}


def s3_client(server):
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"}),
    )


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_trail_api_and_errors(server):
    ct = server.client("cloudtrail")
    s3 = s3_client(server)
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="trail1", S3BucketName="no-such-bucket")
    assert error_code(e) == "S3BucketDoesNotExistException"
    s3.create_bucket(Bucket="audit-archive")
    for name, code in [
        ("ab", "InvalidTrailNameException"),
        ("my--trail", "InvalidTrailNameException"),
        ("10.0.0.1", "InvalidTrailNameException"),
    ]:
        with pytest.raises(ClientError) as e:
            ct.create_trail(Name=name, S3BucketName="audit-archive")
        assert error_code(e) == code, name
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="trail1", S3BucketName="Bad_Bucket")
    assert error_code(e) == "InvalidS3BucketNameException"
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="trail1", S3BucketName="audit-archive", S3KeyPrefix="/x")
    assert error_code(e) == "InvalidS3PrefixException"
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="trail1", S3BucketName="audit-archive",
                        CloudWatchLogsLogGroupArn=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:g:*")
    assert error_code(e) == "InvalidParameterCombinationException"

    created = ct.create_trail(Name="trail1", S3BucketName="audit-archive", S3KeyPrefix="tw/prefix",
                              EnableLogFileValidation=True, TagsList=[{"Key": "team", "Value": "sec"}])
    arn = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/trail1"
    assert created["TrailARN"] == arn
    assert created["S3KeyPrefix"] == "tw/prefix"
    assert created["LogFileValidationEnabled"] is True
    assert created["IsMultiRegionTrail"] is False
    assert created["IncludeGlobalServiceEvents"] is True
    assert "HomeRegion" not in created
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="trail1", S3BucketName="audit-archive")
    assert error_code(e) == "TrailAlreadyExistsException"

    trail = ct.get_trail(Name=arn)["Trail"]
    assert trail["HomeRegion"] == REGION
    assert trail["HasCustomEventSelectors"] is False
    assert trail["HasInsightSelectors"] is False
    assert [t["Name"] for t in ct.describe_trails()["trailList"]] == ["trail1"]
    assert ct.describe_trails(trailNameList=["nope"])["trailList"] == []
    assert ct.list_trails()["Trails"] == [{"TrailARN": arn, "Name": "trail1", "HomeRegion": REGION}]
    status = ct.get_trail_status(Name="trail1")
    assert status["IsLogging"] is False
    assert "LatestDeliveryTime" not in status

    with pytest.raises(ClientError) as e:
        ct.get_trail(Name="missing")
    assert error_code(e) == "TrailNotFoundException"
    with pytest.raises(ClientError) as e:
        ct.get_trail(Name="arn:aws:cloudtrail:us-east-1:1:t1")
    assert error_code(e) == "CloudTrailARNInvalidException"
    other = server.client("cloudtrail", region="eu-west-1")
    with pytest.raises(ClientError) as e:
        other.start_logging(Name=arn)
    assert error_code(e) == "TrailNotFoundException"

    # Event selectors: default, basic, advanced, both at once.
    default = ct.get_event_selectors(TrailName="trail1")
    assert default["EventSelectors"] == [{"ReadWriteType": "All", "IncludeManagementEvents": True,
                                          "DataResources": [], "ExcludeManagementEventSources": []}]
    with pytest.raises(ClientError) as e:
        ct.put_event_selectors(TrailName="trail1", EventSelectors=[{"ReadWriteType": "All"}],
                               AdvancedEventSelectors=[{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]}])
    assert error_code(e) == "InvalidEventSelectorsException"
    with pytest.raises(ClientError) as e:
        ct.put_event_selectors(TrailName="trail1", AdvancedEventSelectors=[
            {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]}]}])
    assert error_code(e) == "InvalidEventSelectorsException"
    advanced = [{"Name": "writes", "FieldSelectors": [
        {"Field": "eventCategory", "Equals": ["Management"]},
        {"Field": "readOnly", "Equals": ["false"]}]}]
    put = ct.put_event_selectors(TrailName="trail1", AdvancedEventSelectors=advanced)
    assert put["AdvancedEventSelectors"] == advanced
    got = ct.get_event_selectors(TrailName="trail1")
    assert got["AdvancedEventSelectors"] == advanced and "EventSelectors" not in got
    assert ct.get_trail(Name="trail1")["Trail"]["HasCustomEventSelectors"] is True

    with pytest.raises(ClientError) as e:
        ct.get_insight_selectors(TrailName="trail1")
    assert error_code(e) == "InsightNotEnabledException"
    ins = ct.put_insight_selectors(TrailName="trail1", InsightSelectors=[{"InsightType": "ApiCallRateInsight"}])
    assert ins["InsightSelectors"] == [{"InsightType": "ApiCallRateInsight", "EventCategories": ["Management"]}]
    with pytest.raises(ClientError) as e:
        ct.put_insight_selectors(TrailName="trail1", InsightSelectors=[{"InsightType": "Bogus"}])
    assert error_code(e) == "InvalidInsightSelectorsException"

    ct.add_tags(ResourceId=arn, TagsList=[{"Key": "env", "Value": "prod"}])
    ct.remove_tags(ResourceId=arn, TagsList=[{"Key": "team"}])
    tags = ct.list_tags(ResourceIdList=[arn])["ResourceTagList"]
    assert tags == [{"ResourceId": arn, "TagsList": [{"Key": "env", "Value": "prod"}]}]
    with pytest.raises(ClientError) as e:
        ct.add_tags(ResourceId=arn, TagsList=[{"Key": "aws:x", "Value": "y"}])
    assert error_code(e) == "InvalidTagParameterException"

    updated = ct.update_trail(Name="trail1", S3KeyPrefix="", IsMultiRegionTrail=True)
    assert "S3KeyPrefix" not in updated and updated["IsMultiRegionTrail"] is True
    # A multi-region trail is seen (as a shadow trail) from other regions, but
    # changed only from its home region.
    assert [t["TrailARN"] for t in other.describe_trails()["trailList"]] == [arn]
    assert other.describe_trails(includeShadowTrails=False)["trailList"] == []
    with pytest.raises(ClientError) as e:
        other.stop_logging(Name="trail1")
    assert error_code(e) == "InvalidHomeRegionException"

    keys = ct.list_public_keys()["PublicKeyList"]
    assert len(keys) == 1 and len(keys[0]["Fingerprint"]) == 32
    assert keys[0]["Value"][:8] == bytes.fromhex("3082010a02820101")
    with pytest.raises(ClientError) as e:
        ct.list_public_keys(StartTime=datetime(2026, 2, 1, tzinfo=timezone.utc),
                            EndTime=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert error_code(e) == "InvalidTimeRangeException"

    ct.delete_trail(Name="trail1")
    assert ct.describe_trails()["trailList"] == []
    with pytest.raises(ClientError) as e:
        ct.delete_trail(Name="trail1")
    assert error_code(e) == "TrailNotFoundException"
    for i in range(5):
        ct.create_trail(Name=f"trail-{i}", S3BucketName="audit-archive")
    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="trail-5", S3BucketName="audit-archive")
    assert error_code(e) == "MaximumNumberOfTrailsExceededException"


class Calls:
    """Every call a boto3 client makes, with its request id, as the server
    answered it; `logged` says whether the trail logged at that moment."""

    def __init__(self):
        self.entries = []
        self.logging = False

    def watch(self, client):
        def after(http_response, parsed, model, **_):
            rid = parsed.get("ResponseMetadata", {}).get("RequestId")
            self.entries.append((model.name, rid, self.logging))
        client.meta.events.register("after-call.*.*", after)
        return client


def clients(server, calls):
    return (calls.watch(server.client("cloudtrail")), calls.watch(server.client("cloudwatch")),
            calls.watch(server.client("logs")))


def some_calls(cw, logs, tag):
    cw.put_metric_alarm(AlarmName=f"a-{tag}", Namespace="App", MetricName="M", Statistic="Sum",
                        Period=60, EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold")
    cw.describe_alarms(AlarmNames=[f"a-{tag}"])
    cw.put_metric_data(Namespace="App", MetricData=[{"MetricName": "M", "Value": 1.0}])  # a data event
    logs.create_log_group(logGroupName=f"/g/{tag}")
    logs.describe_log_groups(logGroupNamePrefix="/g/")


def read_log_files(s3, bucket, prefix):
    files = {}
    paginator = s3.get_paginator("list_objects")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            files[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return files


def validate(server, arn, start, extra_env=None):
    env = {"AWS_DEFAULT_REGION": REGION}
    env.update(extra_env or {})
    return server.cli("cloudtrail", "validate-logs", "--trail-arn", arn, "--start-time", start,
                      "--verbose", check=False, env=env)


def trail_verify(server, arn, start):
    """trailwatch's own stricter verifier, over the same endpoint."""
    from conftest import trailwatch_bin
    import subprocess
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_ENDPOINT_URL=server.endpoint)
    return subprocess.run([trailwatch_bin(), "trail", "verify", "--trail-arn", arn, "--start-time", start],
                          capture_output=True, text=True, env=env, timeout=120)


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_delivery_digests_and_validate_logs(tmp_path):
    data = str(tmp_path / "data")
    server = Server(data, extra_env=FAST).start()
    start = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    calls = Calls()
    try:
        ct, cw, logs = clients(server, calls)
        s3 = s3_client(server)
        s3.create_bucket(Bucket="audit-archive")
        arn = ct.create_trail(Name="trail1", S3BucketName="audit-archive", S3KeyPrefix="tw/prefix",
                              EnableLogFileValidation=True)["TrailARN"]
        some_calls(cw, logs, "before")  # not logging yet
        calls.logging = True
        ct.start_logging(Name="trail1")
        some_calls(cw, logs, "one")
        wait_for(lambda: ct.get_trail_status(Name="trail1").get("LatestDeliveryTime"), what="first delivery")
        some_calls(cw, logs, "two")
        calls.logging = False  # the restart's own calls are made by nobody
        server.stop()
        server = Server(data, extra_env=FAST).start()
        ct, cw, logs = clients(server, calls)
        calls.logging = True
        some_calls(cw, logs, "three")
        # A crash: every acknowledged call is still delivered, exactly once.
        server.stop(signal.SIGKILL)
        server = Server(data, extra_env=FAST).start()
        server.allowed_warnings.append("torn")
        ct, cw, logs = clients(server, calls)
        some_calls(cw, logs, "four")
        ct.stop_logging(Name="trail1")
        calls.logging = False
        some_calls(cw, logs, "gap")  # not logged
        calls.logging = True
        ct.start_logging(Name="trail1")
        some_calls(cw, logs, "five")
        time.sleep(5)  # a whole digest window of the second chain
        ct.stop_logging(Name="trail1")
        calls.logging = False
        status = wait_for(
            lambda: (lambda s: s if s.get("LatestDigestDeliveryTime", datetime.min.replace(tzinfo=timezone.utc))
                     >= s["StopLoggingTime"] and s.get("LatestDeliveryTime") else None)(ct.get_trail_status(Name="trail1")),
            what="final digest")
        assert status["IsLogging"] is False
        assert "LatestDeliveryError" not in status and "LatestDigestDeliveryError" not in status

        s3 = s3_client(server)
        prefix = f"tw/prefix/AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/"
        files = read_log_files(s3, "audit-archive", prefix)
        assert files, "no log files were delivered"
        delivered = []
        for key, body in files.items():
            name = key.rsplit("/", 1)[1]
            assert name.startswith(f"{ACCOUNT}_CloudTrail_{REGION}_") and name.endswith(".json.gz"), key
            doc = json.loads(gzip.decompress(body))
            assert list(doc) == ["Records"] and doc["Records"], key
            delivered.extend(doc["Records"])
        ids = [r["requestID"] for r in delivered]
        assert len(ids) == len(set(ids)), "a record was delivered twice"
        expected = {rid for (op, rid, logged) in calls.entries if logged and op != "PutMetricData"}
        assert set(ids) == expected, (
            f"missing: {sorted(expected - set(ids))[:5]}, unexpected: {sorted(set(ids) - expected)[:5]}")
        assert all(r["eventCategory"] == "Management" for r in delivered)
        names = [r["eventName"] for r in delivered]
        assert names.count("StartLogging") == 2 and names.count("StopLogging") == 2

        digests = read_log_files(s3, "audit-archive", f"tw/prefix/AWSLogs/{ACCOUNT}/CloudTrail-Digest/{REGION}/")
        assert len(digests) >= 3
        chains = sum(1 for body in digests.values()
                     if json.loads(gzip.decompress(body))["previousDigestS3Object"] is None)
        assert chains == 2, "the StopLogging/StartLogging gap starts a second chain"

        result = validate(server, arn, start)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{len(digests)}/{len(digests)} digest files valid" in result.stdout + result.stderr
        assert f"{len(files)}/{len(files)} log files valid" in result.stdout + result.stderr
        strict = trail_verify(server, arn, start)
        assert strict.returncode == 0, strict.stdout + strict.stderr
        assert f"{len(files)}/{len(files)} log files valid" in strict.stdout
        assert "2 digest chain(s)" in strict.stdout, strict.stdout

        # Tampering: an edited log file, then a deleted one.
        keys = sorted(files)
        doc = json.loads(gzip.decompress(files[keys[0]]))
        doc["Records"][0]["eventName"] = "Tampered"
        s3.put_object(Bucket="audit-archive", Key=keys[0], Body=gzip.compress(json.dumps(doc).encode()))
        result = validate(server, arn, start)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "hash value doesn't match" in result.stdout + result.stderr
        strict = trail_verify(server, arn, start)
        assert strict.returncode == 1 and "hash value doesn't match" in strict.stdout, strict.stdout
        s3.put_object(Bucket="audit-archive", Key=keys[0], Body=files[keys[0]])
        assert validate(server, arn, start).returncode == 0
        s3.delete_object(Bucket="audit-archive", Key=keys[-1])
        result = validate(server, arn, start)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "not found" in result.stdout + result.stderr
        assert trail_verify(server, arn, start).returncode == 1
    finally:
        server.stop()
    bad = server.unexpected_log_lines()
    assert not bad, "\n".join(bad)


def test_cloudwatch_logs_delivery_feeds_a_cis_metric_filter_and_alarm(tmp_path, receiver):
    """§2.7: one log event per record in `<account>_CloudTrail_<region>`; the CIS
    "unauthorized API calls" filter counts the denied call, and its alarm fires.
    §2.6: each delivered file is announced on the trail's SNS topic."""
    import urllib.error
    import urllib.request

    from test_sns import NOTIFICATION_FIELDS, verify

    server = Server(str(tmp_path / "data"), extra_env=FAST).start()
    try:
        ct, logs, cw = server.client("cloudtrail"), server.client("logs"), server.client("cloudwatch")
        sns = server.client("sns")
        topic = sns.create_topic(Name="trail-files")["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=receiver.url)
        confirmation = json.loads(receiver.next()[1])
        urllib.request.urlopen(confirmation["SubscribeURL"], timeout=10).read()
        s3 = s3_client(server)
        s3.create_bucket(Bucket="audit-archive")
        logs.create_log_group(logGroupName="cloudtrail/events")
        logs.put_metric_filter(
            logGroupName="cloudtrail/events", filterName="unauthorized",
            filterPattern='{ ($.errorCode = "*UnauthorizedOperation") || ($.errorCode = "AccessDenied*") }',
            metricTransformations=[{"metricName": "UnauthorizedAttemptCount", "metricNamespace": "CISBenchmark",
                                    "metricValue": "1"}])
        cw.put_metric_alarm(AlarmName="unauthorized-calls", Namespace="CISBenchmark",
                            MetricName="UnauthorizedAttemptCount", Statistic="Sum", Period=10,
                            # The count is stamped with the record's eventTime, a few seconds
                            # before it is delivered: a minute of 10-second periods sees it.
                            EvaluationPeriods=6, DatapointsToAlarm=1, Threshold=1.0, ComparisonOperator="GreaterThanOrEqualToThreshold",
                            TreatMissingData="notBreaching")
        group_arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:cloudtrail/events:*"
        with pytest.raises(ClientError) as e:
            ct.create_trail(Name="cis", S3BucketName="audit-archive",
                            CloudWatchLogsLogGroupArn=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:nope:*",
                            CloudWatchLogsRoleArn=f"arn:aws:iam::{ACCOUNT}:role/ct")
        assert error_code(e) == "InvalidCloudWatchLogsLogGroupArnException"
        with pytest.raises(ClientError) as e:
            ct.create_trail(Name="cis", S3BucketName="audit-archive", SnsTopicName="no-such-topic")
        assert error_code(e) == "InsufficientSnsTopicPolicyException"
        created = ct.create_trail(Name="cis", S3BucketName="audit-archive", CloudWatchLogsLogGroupArn=group_arn,
                                  CloudWatchLogsRoleArn=f"arn:aws:iam::{ACCOUNT}:role/ct",
                                  SnsTopicName="trail-files")
        assert created["CloudWatchLogsLogGroupArn"] == group_arn
        assert created["SnsTopicARN"] == topic and created["SnsTopicName"] == "trail-files"
        ct.start_logging(Name="cis")
        # An unsigned listing of a private bucket (a management call): S3
        # answers AccessDenied, and the call is recorded with that error code.
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{server.endpoint}/audit-archive?prefix=secret", timeout=10)
        assert denied.value.code == 403
        described = ct.describe_trails()["trailList"][0]
        stream = f"{ACCOUNT}_CloudTrail_{REGION}"

        def events():
            try:
                return logs.get_log_events(logGroupName="cloudtrail/events", logStreamName=stream,
                                           startFromHead=True)["events"]
            except ClientError:
                return []
        got = wait_for(lambda: (lambda ev: ev if any(json.loads(x["message"]).get("errorCode") == "AccessDenied"
                                                      for x in ev) else None)(events()),
                       timeout=40, what="the denied call in CloudWatch Logs")
        records = [json.loads(x["message"]) for x in got]
        assert [r["eventName"] for r in records][:1] == ["StartLogging"]
        for event, record in zip(got, records):
            assert "Records" not in record
            expected_ms = int(datetime.strptime(record["eventTime"], "%Y-%m-%dT%H:%M:%SZ")
                              .replace(tzinfo=timezone.utc).timestamp() * 1000)
            assert event["timestamp"] == expected_ms
        assert described["Name"] == "cis"
        alarm = wait_for(lambda: (lambda a: a if a["StateValue"] == "ALARM" else None)(
            cw.describe_alarms(AlarmNames=["unauthorized-calls"])["MetricAlarms"][0]),
            timeout=60, what="the CIS alarm")
        assert "[1.0 (" in alarm["StateReason"], alarm["StateReason"]
        status = ct.get_trail_status(Name="cis")
        assert "LatestCloudWatchLogsDeliveryTime" in status and "LatestCloudWatchLogsDeliveryError" not in status
        notice = json.loads(receiver.next()[1])
        assert notice["Type"] == "Notification" and notice["TopicArn"] == topic
        verify(notice, NOTIFICATION_FIELDS)
        body = json.loads(notice["Message"])
        assert body["s3Bucket"] == "audit-archive"
        assert body["s3ObjectKey"][0].startswith(f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/")
        s3.head_object(Bucket="audit-archive", Key=body["s3ObjectKey"][0])
        assert "LatestNotificationTime" in ct.get_trail_status(Name="cis")
    finally:
        server.stop()
    bad = server.unexpected_log_lines()
    assert not bad, "\n".join(bad)


@pytest.fixture
def moto_s3(tmp_path):
    """moto_server as an S3-compatible store on a port the OS picked."""
    import socket
    import subprocess
    import sys
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except Exception:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_trail_files_on_an_s3_compatible_store(tmp_path, moto_s3):
    """§2.5: trail files go to an external S3-compatible endpoint (moto_server);
    validate-logs reads them there and the digests from trailwatch."""
    store = boto3.client("s3", endpoint_url=moto_s3, region_name=REGION, aws_access_key_id="moto",
                         aws_secret_access_key="moto", config=Config(s3={"addressing_style": "path"}))
    store.create_bucket(Bucket="external-archive")
    env = dict(FAST, TRAILWATCH_TRAIL_S3_ENDPOINT=moto_s3, TRAILWATCH_TRAIL_S3_ACCESS_KEY_ID="moto",
               TRAILWATCH_TRAIL_S3_SECRET_ACCESS_KEY="moto")
    server = Server(str(tmp_path / "data"), extra_env=env).start()
    start = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        ct, cw = server.client("cloudtrail"), server.client("cloudwatch")
        with pytest.raises(ClientError) as e:
            ct.create_trail(Name="ext", S3BucketName="missing-archive")
        assert error_code(e) == "S3BucketDoesNotExistException"
        arn = ct.create_trail(Name="ext", S3BucketName="external-archive", S3KeyPrefix="org/audit",
                              EnableLogFileValidation=True)["TrailARN"]
        ct.start_logging(Name="ext")
        made = [cw.put_metric_alarm(AlarmName=f"x-{i}", Namespace="App", MetricName="M", Statistic="Sum",
                                    Period=60, EvaluationPeriods=1, Threshold=1.0,
                                    ComparisonOperator="GreaterThanThreshold")["ResponseMetadata"]["RequestId"]
                for i in range(5)]
        time.sleep(8.5)  # past two digest window ends: at least two digests, whatever the timing
        ct.stop_logging(Name="ext")
        wait_for(lambda: (lambda s: s.get("LatestDigestDeliveryTime") and s["LatestDigestDeliveryTime"]
                          >= s["StopLoggingTime"])(ct.get_trail_status(Name="ext")), what="final digest")
        keys = [o["Key"] for o in store.list_objects(Bucket="external-archive")["Contents"]]
        logs_keys = [k for k in keys if "/CloudTrail/" in k]
        digest_keys = [k for k in keys if "/CloudTrail-Digest/" in k]
        assert logs_keys and len(digest_keys) >= 2
        assert all(k.startswith(f"org/audit/AWSLogs/{ACCOUNT}/") for k in keys)
        head = store.head_object(Bucket="external-archive", Key=digest_keys[0])
        assert head["Metadata"]["signature-algorithm"] == "SHA256withRSA"
        assert len(head["Metadata"]["signature"]) == 512
        records = [r for k in logs_keys
                   for r in json.loads(gzip.decompress(store.get_object(Bucket="external-archive", Key=k)["Body"].read()))["Records"]]
        ids = [r["requestID"] for r in records]
        assert set(made) <= set(ids) and len(ids) == len(set(ids))
        result = validate(server, arn, start, extra_env={
            "AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_CLOUDTRAIL": server.endpoint, "AWS_ENDPOINT_URL_S3": moto_s3})
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert f"{len(digest_keys)}/{len(digest_keys)} digest files valid" in out
        assert f"{len(logs_keys)}/{len(logs_keys)} log files valid" in out
    finally:
        server.stop()
    bad = server.unexpected_log_lines()
    assert not bad, "\n".join(bad)


def test_advanced_selectors_decide_what_is_delivered(tmp_path):
    """§5.4: write management events plus the data events of one log group;
    read calls, other groups' data events and metric data stay out."""
    server = Server(str(tmp_path / "data"), extra_env=FAST).start()
    try:
        ct, cw, logs = server.client("cloudtrail"), server.client("cloudwatch"), server.client("logs")
        s3_client(server).create_bucket(Bucket="audit-archive")
        ct.create_trail(Name="selective", S3BucketName="audit-archive")
        group_arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:app"
        ct.put_event_selectors(TrailName="selective", AdvancedEventSelectors=[
            {"Name": "writes", "FieldSelectors": [
                {"Field": "eventCategory", "Equals": ["Management"]},
                {"Field": "readOnly", "Equals": ["false"]}]},
            {"Name": "app-logs", "FieldSelectors": [
                {"Field": "eventCategory", "Equals": ["Data"]},
                {"Field": "resources.type", "Equals": ["AWS::Logs::LogGroup"]},
                {"Field": "resources.ARN", "StartsWith": [group_arn]}]},
        ])
        ct.start_logging(Name="selective")
        for group in ("app", "other"):
            logs.create_log_group(logGroupName=group)
            logs.create_log_stream(logGroupName=group, logStreamName="s")
            logs.put_log_events(logGroupName=group, logStreamName="s",
                                logEvents=[{"timestamp": int(time.time() * 1000), "message": "hello"}])
        logs.describe_log_groups()
        cw.put_metric_data(Namespace="App", MetricData=[{"MetricName": "M", "Value": 1.0}])
        cw.describe_alarms()
        ct.stop_logging(Name="selective")
        wait_for(lambda: (lambda s: s.get("LatestDeliveryTime") and s["LatestDeliveryTime"] >= s["StopLoggingTime"])(
            ct.get_trail_status(Name="selective")), what="delivery after StopLogging")
        files = read_log_files(s3_client(server), "audit-archive", f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/")
        records = [r for body in files.values() for r in json.loads(gzip.decompress(body))["Records"]]
        seen = sorted((r["eventName"], r["eventCategory"]) for r in records)
        data = [r for r in records if r["eventCategory"] == "Data"]
        assert [r["eventName"] for r in data] == ["PutLogEvents"], seen
        assert data[0]["requestParameters"]["logGroupName"] == "app"
        names = {r["eventName"] for r in records}
        assert {"StartLogging", "CreateLogGroup", "CreateLogStream", "StopLogging"} <= names, seen
        assert not names & {"DescribeLogGroups", "DescribeAlarms", "PutMetricData", "GetTrailStatus"}, seen
        assert all(not r["readOnly"] for r in records if r["eventCategory"] == "Management")
    finally:
        server.stop()
    bad = server.unexpected_log_lines()
    assert not bad, "\n".join(bad)


def test_trail_status_reports_a_failing_bucket_then_recovery(tmp_path):
    """§2.3: a failed put sets LatestDeliveryError to the store's code and is
    retried; the next success clears it and delivers what waited."""
    server = Server(str(tmp_path / "data"), extra_env=FAST).start()
    server.allowed_warnings.append("trail log delivery failed")
    try:
        ct, cw = server.client("cloudtrail"), server.client("cloudwatch")
        s3 = s3_client(server)
        s3.create_bucket(Bucket="fragile-archive")
        ct.create_trail(Name="fragile", S3BucketName="fragile-archive")
        ct.start_logging(Name="fragile")
        wait_for(lambda: ct.get_trail_status(Name="fragile").get("LatestDeliveryTime"), what="first delivery")
        for obj in s3.list_objects_v2(Bucket="fragile-archive").get("Contents", []):
            s3.delete_object(Bucket="fragile-archive", Key=obj["Key"])
        s3.delete_bucket(Bucket="fragile-archive")
        rid = cw.describe_alarms()["ResponseMetadata"]["RequestId"]
        status = wait_for(lambda: (lambda s: s if s.get("LatestDeliveryError") else None)(
            ct.get_trail_status(Name="fragile")), what="a delivery error")
        assert status["LatestDeliveryError"] == "NoSuchBucket"
        s3.create_bucket(Bucket="fragile-archive")
        wait_for(lambda: "LatestDeliveryError" not in ct.get_trail_status(Name="fragile"), what="recovery")
        files = read_log_files(s3, "fragile-archive", f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/")
        ids = [r["requestID"] for body in files.values() for r in json.loads(gzip.decompress(body))["Records"]]
        assert rid in ids, "the record that waited during the failure is delivered"
    finally:
        server.stop()
    bad = server.unexpected_log_lines()
    assert not bad, "\n".join(bad)


def test_digests_signed_across_key_rotations_validate(tmp_path):
    """Keys rotated every 6 s while 4-s digest windows close: ListPublicKeys
    gives contiguous validity ranges, each digest names one of them, and both
    verifiers pick the right key for every digest."""
    server = Server(str(tmp_path / "data"),
                    extra_env={**FAST, "TRAILWATCH_DIGEST_KEY_ROTATION_SECS": "6"}).start()
    started = datetime.now(timezone.utc)
    start = (started - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        ct, cw, logs = clients(server, Calls())
        s3 = s3_client(server)
        s3.create_bucket(Bucket="rotating")
        arn = ct.create_trail(Name="rot", S3BucketName="rotating", EnableLogFileValidation=True)["TrailARN"]
        ct.start_logging(Name="rot")
        deadline = time.time() + 16
        n = 0
        while time.time() < deadline:
            some_calls(cw, logs, f"r{n}")
            n += 1
            time.sleep(1)
        ct.stop_logging(Name="rot")
        wait_for(lambda: (lambda s: s.get("LatestDigestDeliveryTime") and
                          s["LatestDigestDeliveryTime"] >= s["StopLoggingTime"])(ct.get_trail_status(Name="rot")),
                 what="final digest")
        keys = ct.list_public_keys(StartTime=started - timedelta(minutes=1),
                                   EndTime=datetime.now(timezone.utc))["PublicKeyList"]
        assert len(keys) >= 2, keys
        keys.sort(key=lambda k: k["ValidityStartTime"])
        for a, b in zip(keys, keys[1:]):
            assert a["ValidityEndTime"] == b["ValidityStartTime"], keys
        fingerprints = {k["Fingerprint"] for k in keys}
        digests = read_log_files(s3, "rotating", f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/{REGION}/")
        used = {json.loads(gzip.decompress(body))["digestPublicKeyFingerprint"] for body in digests.values()}
        assert used <= fingerprints, (used, fingerprints)
        assert len(used) >= 2, used
        result = validate(server, arn, start)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{len(digests)}/{len(digests)} digest files valid" in result.stdout + result.stderr
        strict = trail_verify(server, arn, start)
        assert strict.returncode == 0, strict.stdout + strict.stderr
    finally:
        server.stop()
    bad = server.unexpected_log_lines()
    assert not bad, "\n".join(bad)
