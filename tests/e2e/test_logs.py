"""CloudWatch Logs end to end with boto3 and the aws CLI: groups, streams,
retention, PutLogEvents (rejections, ordering, span), the GetLogEvents token
walk, FilterLogEvents with term patterns, events across a restart, Logs Insights
queries (StopQuery while Running, results and interrupted queries across a
restart, with the hidden TRAILWATCH_INSIGHTS_DELAY_MS; GetQueryResults paging)
and query definitions."""
import json
import time

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, Server

DAY = 86_400_000
HOUR = 3_600_000


def now_ms():
    return int(time.time() * 1000)


def error_of(call, **kwargs):
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return info.value.response["Error"]["Code"], info.value.response["Error"]["Message"], \
        info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_groups_streams_and_retention(server):
    logs = server.client("logs")
    for name in ["a", "B", "/x", "/aws/lambda/f"]:
        logs.create_log_group(logGroupName=name)
    logs.create_log_group(logGroupName="tagged", tags={"team": "core"})
    assert error_of(logs.create_log_group, logGroupName="a")[::2] == ("ResourceAlreadyExistsException", 400)
    code, message, _ = error_of(logs.create_log_group, logGroupName="aws/x")
    assert code == "InvalidParameterException" and "reserved" in message
    assert error_of(logs.create_log_group, logGroupName="bad name")[0] == "InvalidParameterException"

    names = [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]]
    assert names == ["/aws/lambda/f", "/x", "B", "a", "tagged"]  # ASCII order
    group = logs.describe_log_groups(logGroupNamePrefix="tag")["logGroups"][0]
    assert group["arn"] == f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:tagged:*"
    assert group["logGroupArn"] == f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:tagged"
    assert group["logGroupClass"] == "STANDARD" and group["storedBytes"] == 0 and "retentionInDays" not in group
    trimmed = logs.describe_log_groups(logGroupNamePattern="amb")["logGroups"]
    assert trimmed == [{"logGroupName": "/aws/lambda/f", "creationTime": trimmed[0]["creationTime"],
                        "arn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/f:*"}]
    assert error_of(logs.describe_log_groups, logGroupNamePrefix="a", logGroupNamePattern="a")[0] == "InvalidParameterException"
    # Paging one at a time ends without repeating a token.
    pages = list(logs.get_paginator("describe_log_groups").paginate(PaginationConfig={"PageSize": 1}))
    assert [g["logGroupName"] for p in pages for g in p["logGroups"]] == names

    code, message, _ = error_of(logs.put_retention_policy, logGroupName="a", retentionInDays=2)
    assert code == "InvalidParameterException"
    assert message.startswith("1 validation error detected: Value '2' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [1, 3, 5, 7,")
    logs.put_retention_policy(logGroupName="a", retentionInDays=7)
    assert logs.describe_log_groups(logGroupNamePrefix="a")["logGroups"][0]["retentionInDays"] == 7
    logs.delete_retention_policy(logGroupName="a")
    assert "retentionInDays" not in logs.describe_log_groups(logGroupNamePrefix="a")["logGroups"][0]
    assert error_of(logs.put_retention_policy, logGroupName="nope", retentionInDays=7)[0] == "ResourceNotFoundException"

    assert error_of(logs.create_log_stream, logGroupName="nope", logStreamName="s")[:2] == \
        ("ResourceNotFoundException", "The specified log group does not exist.")
    for s in ["web-2", "web-1", "db"]:
        logs.create_log_stream(logGroupName="a", logStreamName=s)
    assert error_of(logs.create_log_stream, logGroupName="a", logStreamName="db")[0] == "ResourceAlreadyExistsException"
    assert error_of(logs.create_log_stream, logGroupName="a", logStreamName="x:y")[0] == "InvalidParameterException"
    streams = logs.describe_log_streams(logGroupName="a")["logStreams"]
    assert [s["logStreamName"] for s in streams] == ["db", "web-1", "web-2"]
    assert streams[0]["arn"] == f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:a:log-stream:db"
    assert "firstEventTimestamp" not in streams[0]
    t = now_ms()
    logs.put_log_events(logGroupName="a", logStreamName="web-1", logEvents=[{"timestamp": t - 2000, "message": "x"}])
    logs.put_log_events(logGroupName="a", logStreamName="db", logEvents=[{"timestamp": t - 1000, "message": "yy"}])
    by_time = logs.describe_log_streams(logGroupName="a", orderBy="LastEventTime", descending=True)["logStreams"]
    assert [s["logStreamName"] for s in by_time] == ["db", "web-1", "web-2"]
    assert by_time[0]["lastEventTimestamp"] == t - 1000
    assert error_of(logs.describe_log_streams, logGroupName="a", orderBy="LastEventTime", logStreamNamePrefix="w")[:2] == \
        ("InvalidParameterException", "Cannot order by LastEventTime with a logStreamNamePrefix.")
    assert logs.describe_log_groups(logGroupNamePrefix="a")["logGroups"][0]["storedBytes"] == 3
    ident = logs.describe_log_streams(logGroupIdentifier=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:a:*",
                                      logStreamNamePrefix="web")["logStreams"]
    assert [s["logStreamName"] for s in ident] == ["web-1", "web-2"]

    # A deleted stream's events never come back under the same name.
    logs.delete_log_stream(logGroupName="a", logStreamName="db")
    logs.create_log_stream(logGroupName="a", logStreamName="db")
    assert logs.get_log_events(logGroupName="a", logStreamName="db", startFromHead=True)["events"] == []
    logs.delete_log_group(logGroupName="a")
    assert error_of(logs.describe_log_streams, logGroupName="a")[0] == "ResourceNotFoundException"
    assert error_of(logs.delete_log_group, logGroupName="a")[0] == "ResourceNotFoundException"


def test_put_log_events_rules(server):
    logs = server.client("logs")
    logs.create_log_group(logGroupName="g")
    assert error_of(logs.put_log_events, logGroupName="g", logStreamName="s",
                    logEvents=[{"timestamp": now_ms(), "message": "m"}])[:2] == \
        ("ResourceNotFoundException", "The specified log stream does not exist.")
    logs.create_log_stream(logGroupName="g", logStreamName="s")
    logs.put_retention_policy(logGroupName="g", retentionInDays=7)
    now = now_ms()
    out = logs.put_log_events(logGroupName="g", logStreamName="s", logEvents=[
        {"timestamp": now - 20 * DAY, "message": "a"},
        {"timestamp": now - 10 * DAY, "message": "b"},
        {"timestamp": now - HOUR, "message": "c"},
        {"timestamp": now, "message": "d"},
        {"timestamp": now + 3 * HOUR, "message": "e"},
    ])
    assert out["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 1, "expiredLogEventEndIndex": 2, "tooNewLogEventStartIndex": 4}
    assert "nextSequenceToken" in out
    got = logs.get_log_events(logGroupName="g", logStreamName="s", startFromHead=True)["events"]
    assert [e["message"] for e in got] == ["c", "d"]
    assert len({e["ingestionTime"] for e in got}) == 1
    code, message, status = error_of(logs.put_log_events, logGroupName="g", logStreamName="s", logEvents=[
        {"timestamp": now, "message": "late"}, {"timestamp": now - 1000, "message": "early"}])
    assert (code, status) == ("InvalidParameterException", 400) and "chronological" in message
    code, message, _ = error_of(logs.put_log_events, logGroupName="g", logStreamName="s", logEvents=[
        {"timestamp": now - 25 * HOUR, "message": "x"}, {"timestamp": now, "message": "y"}])
    assert code == "InvalidParameterException" and "24 hours" in message
    big = "x" * (1_048_576 - 26)
    logs.put_log_events(logGroupName="g", logStreamName="s", logEvents=[{"timestamp": now, "message": big}])
    code, message, _ = error_of(logs.put_log_events, logGroupName="g", logStreamName="s",
                                logEvents=[{"timestamp": now, "message": big + "x"}])
    assert (code, message) == ("InvalidParameterException", "Upload too large: 1048577 bytes exceeds limit of 1048576")
    # An invalid entity does not reject the events.
    out = logs.put_log_events(logGroupName="g", logStreamName="s", logEvents=[{"timestamp": now_ms(), "message": "with entity"}],
                              entity={"keyAttributes": {"Type": "Service", "Bogus": "x"}})
    assert out["rejectedEntityInfo"] == {"errorType": "InvalidKeyAttributes"}
    out = logs.put_log_events(logGroupName="g", logStreamName="s", logEvents=[{"timestamp": now_ms(), "message": "with entity"}],
                              entity={"keyAttributes": {"Type": "Service", "Name": "checkout", "Environment": "prod"}})
    assert "rejectedEntityInfo" not in out
    assert len(logs.filter_log_events(logGroupName="g", filterPattern='"with entity"')["events"]) == 2


def test_get_log_events_token_walk(server):
    logs = server.client("logs")
    logs.create_log_group(logGroupName="g")
    logs.create_log_stream(logGroupName="g", logStreamName="s")
    t0 = now_ms() - HOUR
    logs.put_log_events(logGroupName="g", logStreamName="s", logEvents=[
        {"timestamp": t0 + 1000, "message": "e1"}, {"timestamp": t0 + 2000, "message": "e2"},
        {"timestamp": t0 + 3000, "message": "e3"}])

    def get(**kw):
        out = logs.get_log_events(logGroupName="g", logStreamName="s", **kw)
        return [e["message"] for e in out["events"]], out["nextForwardToken"], out["nextBackwardToken"]

    page, f1, b0 = get(startFromHead=True, limit=2)
    assert page == ["e1", "e2"]
    page, f2, _ = get(nextToken=f1, limit=2, startFromHead=True)
    assert page == ["e3"]
    page, f3, _ = get(nextToken=f2, startFromHead=True)
    assert page == [] and f3 == f2  # the end-of-stream token comes back
    logs.put_log_events(logGroupName="g", logStreamName="s", logEvents=[{"timestamp": t0 + 4000, "message": "e4"}])
    assert get(nextToken=f2, startFromHead=True)[0] == ["e4"]  # late events, same token
    page, _, b1 = get(limit=2)
    assert page == ["e3", "e4"]
    page, _, b = get(nextToken=b1, limit=2)
    assert page == ["e1", "e2"]
    page, _, b_again = get(nextToken=b0)
    assert page == [] and b_again == b0
    assert get(startTime=t0 + 2000, endTime=t0 + 3000, startFromHead=True)[0] == ["e2"]
    assert error_of(logs.get_log_events, logGroupName="g", logStreamName="s", nextToken="f/123/s")[0] == "InvalidParameterException"


def test_filter_log_events_and_restart(tmp_path):
    srv = Server(str(tmp_path / "data"))
    srv.start()
    t = now_ms() - HOUR
    try:
        logs = srv.client("logs")
        logs.create_log_group(logGroupName="app")
        for s in ["a", "b"]:
            logs.create_log_stream(logGroupName="app", logStreamName=s)
        logs.put_log_events(logGroupName="app", logStreamName="a", logEvents=[
            {"timestamp": t + 1, "message": "[ERROR 400] BAD REQUEST"}, {"timestamp": t + 2, "message": "[INFO] ok"}])
        logs.put_log_events(logGroupName="app", logStreamName="b", logEvents=[
            {"timestamp": t + 3, "message": "[ERROR 419] MISSING ARGUMENTS"}])
    finally:
        assert srv.stop() == 0
    srv.start()
    try:
        logs = srv.client("logs")

        def messages(**kw):
            return [(e["logStreamName"], e["message"]) for e in logs.filter_log_events(logGroupName="app", **kw)["events"]]

        assert messages(filterPattern="ERROR") == [("a", "[ERROR 400] BAD REQUEST"), ("b", "[ERROR 419] MISSING ARGUMENTS")]
        assert messages(filterPattern="ERROR -ARGUMENTS") == [("a", "[ERROR 400] BAD REQUEST")]
        assert messages(filterPattern='"BAD REQUEST"') == [("a", "[ERROR 400] BAD REQUEST")]
        assert messages(filterPattern="error") == []
        assert messages(filterPattern="%ERROR.4[01]9%") == [("b", "[ERROR 419] MISSING ARGUMENTS")]
        assert messages(filterPattern="[level, code = 4*, ...]") == []  # "[ERROR 400]" is one token
        assert len(messages(filterPattern="[level = *ERROR*, ...]")) == 2
        assert len(messages(filterPattern="?INFO ?ARGUMENTS")) == 2
        assert messages(logStreamNames=["b"]) == [("b", "[ERROR 419] MISSING ARGUMENTS")]
        assert len(messages(startTime=t + 2, endTime=t + 3)) == 2  # both ends inclusive
        first = logs.filter_log_events(logGroupName="app", filterPattern="ERROR", limit=1)
        assert len(first["events"]) == 1 and first["searchedLogStreams"] == []
        assert len(first["events"][0]["eventId"]) == 56
        second = logs.filter_log_events(logGroupName="app", filterPattern="ERROR", limit=1, nextToken=first["nextToken"])
        assert second["events"][0]["logStreamName"] == "b" and "nextToken" not in second
        pages = list(logs.get_paginator("filter_log_events").paginate(logGroupName="app", PaginationConfig={"PageSize": 1}))
        assert sum(len(p["events"]) for p in pages) == 3
        code, message, _ = error_of(logs.filter_log_events, logGroupName="app", logStreamNames=["a"], logStreamNamePrefix="a")
        assert code == "InvalidParameterException"
        assert error_of(logs.filter_log_events, logGroupName="app", filterPattern='"unclosed')[:2] == \
            ("InvalidParameterException", "Invalid filter pattern")
        assert error_of(logs.filter_log_events, logGroupName="app", startFromHead=False, startTime=0)[0] == "InvalidParameterException"
        newest = logs.filter_log_events(logGroupName="app", startFromHead=False, startTime=t)["events"]
        assert [e["timestamp"] for e in newest] == [t + 3, t + 2, t + 1]
    finally:
        srv.stop()


def test_json_and_space_delimited_patterns(server):
    logs = server.client("logs")
    logs.create_log_group(logGroupName="j")
    logs.create_log_stream(logGroupName="j", logStreamName="s")
    t = now_ms()
    logs.put_log_events(logGroupName="j", logStreamName="s", logEvents=[
        {"timestamp": t - 3, "message": '{"eventType":"UpdateTrail","user":{"id":1},"tags":["a","b"]}'},
        {"timestamp": t - 2, "message": '{"eventType":"CreateTrail","user":{"id":2},"nothing":null}'},
        {"timestamp": t - 1, "message": '127.0.0.1 Prod frank [10/Oct/2000:13:25:15 -0700] "GET /index.html HTTP/1.0" 404 1534'},
    ])

    def times(pattern):
        return [e["timestamp"] - t for e in logs.filter_log_events(logGroupName="j", filterPattern=pattern)["events"]]

    assert times('{ $.eventType = "UpdateTrail" }') == [-3]
    assert times("{ $.eventType = *Trail && $.user.id > 1 }") == [-2]
    assert times("{ $.nothing IS NULL || $.tags[1] = b }") == [-3, -2]
    assert times("{ $.missing NOT EXISTS }") == [-3, -2]
    assert times("[ip, user, username, timestamp, request = *.html*, status_code = 4*, bytes]") == [-1]
    assert times("[..., status_code = 404 || status_code = 410, bytes > 2000]") == []
    assert error_of(logs.filter_log_events, logGroupName="j", filterPattern="{ $.a EXISTS }")[0] == "InvalidParameterException"


def test_metric_filters_emit_real_metrics(server):
    logs = server.client("logs")
    cw = server.client("cloudwatch")
    logs.create_log_group(logGroupName="api")
    logs.create_log_stream(logGroupName="api", logStreamName="s")
    logs.put_metric_filter(logGroupName="api", filterName="latency", filterPattern="{ $.latency = * }",
                           metricTransformations=[{"metricName": "Latency", "metricNamespace": "Api",
                                                   "metricValue": "$.latency", "defaultValue": 0, "unit": "Milliseconds"}])
    logs.put_metric_filter(logGroupName="api", filterName="status", filterPattern="[ip, status, bytes]",
                           metricTransformations=[{"metricName": "Bytes", "metricNamespace": "Api",
                                                   "metricValue": "$bytes", "dimensions": {"Status": "$status"}}])
    code, message, _ = error_of(logs.put_metric_filter, logGroupName="api", filterName="bad", filterPattern="ERROR",
                                metricTransformations=[{"metricName": "M", "metricNamespace": "N", "metricValue": "$.x"}])
    assert (code, message) == ("InvalidParameterException", "Invalid metric value for filter pattern.")
    assert error_of(logs.put_metric_filter, logGroupName="api", filterName="bad", filterPattern="[a, b]",
                    metricTransformations=[{"metricName": "M", "metricNamespace": "N", "metricValue": "1",
                                            "defaultValue": 0, "dimensions": {"D": "$a"}}])[0] == "InvalidParameterException"
    described = logs.describe_metric_filters(logGroupName="api")["metricFilters"]
    assert [f["filterName"] for f in described] == ["latency", "status"]
    assert described[0]["metricTransformations"][0]["metricValue"] == "$.latency"
    assert logs.describe_log_groups(logGroupNamePrefix="api")["logGroups"][0]["metricFilterCount"] == 2
    assert [f["filterName"] for f in logs.describe_metric_filters(metricName="Bytes", metricNamespace="Api")["metricFilters"]] == ["status"]

    minute = (now_ms() // 60_000 - 2) * 60_000
    logs.put_log_events(logGroupName="api", logStreamName="s", logEvents=[
        {"timestamp": minute + 1000, "message": '{"latency":50}'},
        {"timestamp": minute + 2000, "message": '{"x":1}'},
        {"timestamp": minute + 3000, "message": '{"latency":"fast"}'},
        {"timestamp": minute + 4000, "message": "10.0.0.1 404 512"},
    ])
    import datetime
    start = datetime.datetime.fromtimestamp(minute / 1000, tz=datetime.timezone.utc)
    stats = cw.get_metric_statistics(Namespace="Api", MetricName="Latency", StartTime=start,
                                     EndTime=start + datetime.timedelta(minutes=1), Period=60,
                                     Statistics=["SampleCount", "Sum"])["Datapoints"]
    # {"latency":50} → 50; {"x":1} and the plain line → default 0; "fast" → nothing.
    assert [(p["SampleCount"], p["Sum"], p["Unit"]) for p in stats] == [(3.0, 50.0, "Milliseconds")]
    by_status = cw.get_metric_statistics(Namespace="Api", MetricName="Bytes", Dimensions=[{"Name": "Status", "Value": "404"}],
                                         StartTime=start, EndTime=start + datetime.timedelta(minutes=1), Period=60,
                                         Statistics=["Sum"])["Datapoints"]
    assert [p["Sum"] for p in by_status] == [512.0]

    tested = logs.test_metric_filter(
        filterPattern="[ip, user, username, timestamp, request, status_code = 4*, bytes]",
        logEventMessages=['127.0.0.1 Prod frank [10/Oct/2000:13:25:15 -0700] "GET /index.html HTTP/1.0" 404 1534',
                          '127.0.0.1 Prod frank [10/Oct/2000:13:25:16 -0700] "GET / HTTP/1.0" 200 10'])["matches"]
    assert [m["eventNumber"] for m in tested] == [1]
    assert tested[0]["extractedValues"]["$request"] == "GET /index.html HTTP/1.0"
    assert tested[0]["extractedValues"]["$bytes"] == "1534"

    logs.delete_metric_filter(logGroupName="api", filterName="latency")
    assert error_of(logs.delete_metric_filter, logGroupName="api", filterName="latency")[:2] == \
        ("ResourceNotFoundException", "The specified metric filter does not exist.")


def test_log_group_tags(server):
    logs = server.client("logs")
    logs.create_log_group(logGroupName="t", tags={"team": "core"})
    arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:t"
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "core"}
    logs.tag_resource(resourceArn=arn, tags={"env": "prod", "team": "obs"})
    assert logs.list_tags_log_group(logGroupName="t")["tags"] == {"env": "prod", "team": "obs"}
    logs.untag_resource(resourceArn=arn, tagKeys=["env"])
    logs.tag_log_group(logGroupName="t", tags={"cost": "a1"})
    logs.untag_log_group(logGroupName="t", tags=["team"])
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"cost": "a1"}
    assert error_of(logs.tag_resource, resourceArn=arn, tags={"aws:x": "y"})[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as info:
        logs.tag_resource(resourceArn=arn, tags={f"k{i}": "v" for i in range(50)})
    assert info.value.response["Error"]["Code"] == "TooManyTagsException"
    assert info.value.response["resourceName"] == arn
    assert error_of(logs.list_tags_for_resource, resourceArn=arn + "x")[0] == "ResourceNotFoundException"
    logs.delete_log_group(logGroupName="t")
    logs.create_log_group(logGroupName="t")
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {}


def test_export_task_writes_the_bucket_layout(server):
    import gzip
    import os
    logs = server.client("logs")
    logs.create_log_group(logGroupName="ex")
    for s in ["web-1", "web-2", "db"]:
        logs.create_log_stream(logGroupName="ex", logStreamName=s)
    # Export ranges must end after the group's creation: the next whole second.
    t = (now_ms() // 1000 + 1) * 1000
    logs.put_log_events(logGroupName="ex", logStreamName="web-1", logEvents=[
        {"timestamp": t, "message": "GET /health 200"}, {"timestamp": t + 1, "message": "GET / 404"}])
    logs.put_log_events(logGroupName="ex", logStreamName="web-2", logEvents=[{"timestamp": t + 5000, "message": "late"}])
    logs.put_log_events(logGroupName="ex", logStreamName="db", logEvents=[{"timestamp": t, "message": "not exported"}])
    assert error_of(logs.create_export_task, logGroupName="ex", fromTime=t + 10, to=t, destination="b")[0] == "InvalidParameterException"
    assert error_of(logs.create_export_task, logGroupName="nope", fromTime=t, to=t, destination="b")[0] == "ResourceNotFoundException"
    task = logs.create_export_task(taskName="nightly", logGroupName="ex", logStreamNamePrefix="web", fromTime=t,
                                   to=t + 1, destination="exports", destinationPrefix="p")["taskId"]
    # One active task per account. The worker may finish a task between two
    # calls, so keep creating until a create meets an active one.
    refused = None
    for _ in range(5):
        try:
            logs.create_export_task(logGroupName="ex", fromTime=t, to=t + 1, destination="b")
        except ClientError as e:
            refused = (e.response["Error"]["Code"], e.response["Error"]["Message"])
            break
    assert refused == ("LimitExceededException", "Resource limit exceeded.")
    deadline = time.time() + 20
    while True:
        described = logs.describe_export_tasks(taskId=task)["exportTasks"][0]
        if described["status"]["code"] == "COMPLETED" or time.time() > deadline:
            break
        time.sleep(0.2)
    assert described["status"] == {"code": "COMPLETED", "message": "Completed successfully"}
    assert described["taskName"] == "nightly" and described["destinationPrefix"] == "p"
    assert "completionTime" in described["executionInfo"]
    root = os.path.join(server.data_dir, "objects", "buckets", "exports", "p")
    assert open(os.path.join(root, "aws-logs-write-test")).read() == "Permission Check Successful"
    lines = gzip.open(os.path.join(root, task, "web-1", "000000.gz"), "rt").read().splitlines()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000))
    assert lines == [f"{stamp}.000Z GET /health 200", f"{stamp}.001Z GET / 404"]
    # web-2's event is after `to`; db does not match the prefix.
    assert sorted(os.listdir(os.path.join(root, task))) == ["web-1"]
    assert error_of(logs.cancel_export_task, taskId=task)[0] == "InvalidOperationException"
    assert error_of(logs.cancel_export_task, taskId="00000000-0000-0000-0000-000000000000")[0] == "ResourceNotFoundException"
    assert task in [x["taskId"] for x in logs.describe_export_tasks(statusCode="COMPLETED")["exportTasks"]]
    assert logs.describe_export_tasks(taskId="unknown")["exportTasks"] == []


def test_subscription_filters_deliver_to_a_log_group_and_http(server):
    import gzip
    import http.server
    import threading
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(gzip.decompress(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        logs = server.client("logs")
        for g in ["src", "dst"]:
            logs.create_log_group(logGroupName=g)
        logs.create_log_stream(logGroupName="src", logStreamName="web")
        dst_arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:dst:*"
        logs.put_subscription_filter(logGroupName="src", filterName="to-group", filterPattern="ERROR",
                                     destinationArn=dst_arn)
        dest = logs.put_destination(destinationName="hook", targetArn=f"http://127.0.0.1:{httpd.server_port}/ingest",
                                    roleArn=f"arn:aws:iam::{ACCOUNT}:role/cwl")["destination"]
        assert dest["arn"] == f"arn:aws:logs:{REGION}:{ACCOUNT}:destination:hook"
        logs.put_subscription_filter(logGroupName="src", filterName="to-http", filterPattern="?ERROR ?WARN",
                                     destinationArn=dest["arn"])
        assert received and received[0]["messageType"] == "CONTROL_MESSAGE"
        code, message, _ = error_of(logs.put_subscription_filter, logGroupName="src", filterName="k",
                                    filterPattern="", destinationArn=f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/s")
        assert code == "InvalidParameterException" and message.startswith("Could not deliver test message")
        assert [f["filterName"] for f in logs.describe_subscription_filters(logGroupName="src")["subscriptionFilters"]] == \
            ["to-group", "to-http"]
        # A third filter: over the limit of two per group.
        assert error_of(logs.put_subscription_filter, logGroupName="src", filterName="third", filterPattern="",
                        destinationArn=dst_arn)[0] == "LimitExceededException"

        t = now_ms()
        logs.put_log_events(logGroupName="src", logStreamName="web", logEvents=[
            {"timestamp": t, "message": "ERROR disk"}, {"timestamp": t + 1, "message": "INFO ok"},
            {"timestamp": t + 2, "message": "WARN slow"}])
        delivered = logs.get_log_events(logGroupName="dst", logStreamName="web", startFromHead=True)["events"]
        assert len(delivered) == 1
        payload = json.loads(delivered[0]["message"])
        assert payload["messageType"] == "DATA_MESSAGE" and payload["owner"] == ACCOUNT
        assert (payload["logGroup"], payload["logStream"], payload["subscriptionFilters"]) == ("src", "web", ["to-group"])
        assert [(e["timestamp"], e["message"]) for e in payload["logEvents"]] == [(t, "ERROR disk")]
        assert len(payload["logEvents"][0]["id"]) == 56
        deadline = time.time() + 10
        while len(received) < 2 and time.time() < deadline:
            time.sleep(0.1)
        data = received[1]
        assert data["messageType"] == "DATA_MESSAGE"
        assert [e["message"] for e in data["logEvents"]] == ["ERROR disk", "WARN slow"]

        logs.delete_subscription_filter(logGroupName="src", filterName="to-http")
        assert error_of(logs.delete_subscription_filter, logGroupName="src", filterName="to-http")[0] == "ResourceNotFoundException"
        logs.put_destination_policy(destinationName="hook", accessPolicy='{"Version":"2012-10-17","Statement":[]}')
        assert logs.describe_destinations()["destinations"][0]["accessPolicy"].startswith('{"Version"')
        logs.delete_destination(destinationName="hook")
        assert logs.describe_destinations()["destinations"] == []
    finally:
        httpd.shutdown()


def test_live_tail_streams_new_events_then_times_out(tmp_path):
    import threading
    import boto3
    from botocore.config import Config
    from conftest import ACCESS_KEY, SECRET_KEY
    srv = Server(str(tmp_path / "data"), extra_env={"TRAILWATCH_LIVE_TAIL_TIMEOUT_SECS": "4"})
    srv.start()
    try:
        logs = srv.client("logs")
        logs.create_log_group(logGroupName="tail")
        for s in ["web", "db"]:
            logs.create_log_stream(logGroupName="tail", logStreamName=s)
        logs.put_log_events(logGroupName="tail", logStreamName="web",
                            logEvents=[{"timestamp": now_ms(), "message": "ERROR before the session"}])
        # The operation has the host prefix `stream-`; a local endpoint turns it off.
        tail_client = boto3.client("logs", endpoint_url=srv.endpoint, region_name=REGION,
                                   aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                                   config=Config(inject_host_prefix=False, retries={"max_attempts": 1}))
        arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:tail"
        assert error_of(tail_client.start_live_tail, logGroupIdentifiers=[arn], logStreamNames=["web"],
                        logStreamNamePrefixes=["w"])[:2] == \
            ("InvalidParameterException", "Only one of logStreamNames or logStreamNamePrefixes can be provided.")
        response = tail_client.start_live_tail(logGroupIdentifiers=[arn], logStreamNamePrefixes=["we"],
                                               logEventFilterPattern="ERROR")

        def writer():
            time.sleep(1.2)
            t = now_ms()
            logs.put_log_events(logGroupName="tail", logStreamName="web", logEvents=[
                {"timestamp": t, "message": "ERROR live"}, {"timestamp": t + 1, "message": "INFO live"}])
            logs.put_log_events(logGroupName="tail", logStreamName="db", logEvents=[
                {"timestamp": t, "message": "ERROR other stream"}])

        threading.Thread(target=writer).start()
        kinds, results = [], []
        with pytest.raises(Exception) as info:
            for event in response["responseStream"]:
                kind = next(iter(event))
                kinds.append(kind)
                if kind == "sessionStart":
                    assert event["sessionStart"]["logGroupIdentifiers"] == [arn]
                    assert event["sessionStart"]["logEventFilterPattern"] == "ERROR"
                if kind == "sessionUpdate":
                    results.extend(event["sessionUpdate"]["sessionResults"])
        assert "SessionTimeoutException" in str(info.value) or "SessionTimeout" in type(info.value).__name__
        assert kinds[0] == "sessionStart" and kinds.count("sessionUpdate") >= 2
        assert [(r["logStreamName"], r["message"], r["logGroupIdentifier"]) for r in results] == [("web", "ERROR live", arn)]
    finally:
        srv.stop()


def test_insights_worked_example(server):
    logs = server.client("logs")
    logs.create_log_group(logGroupName="app")
    logs.create_log_stream(logGroupName="app", logStreamName="s1")
    base = (now_ms() // 3_600_000 - 1) * 3_600_000  # an hour boundary, an hour ago
    logs.put_log_events(logGroupName="app", logStreamName="s1", logEvents=[
        {"timestamp": base + 10_000, "message": '{"level":"ERROR","latency":120,"user":{"id":"u1"}}'},
        {"timestamp": base + 20_000, "message": '{"level":"INFO","latency":30,"user":{"id":"u2"}}'},
        {"timestamp": base + 65_000, "message": '{"level":"ERROR","latency":300,"user":{"id":"u1"}}'},
        {"timestamp": base + 120_000, "message": "plain text latency=50"},
    ])

    def run(query):
        qid = logs.start_query(logGroupName="app", startTime=base // 1000, endTime=base // 1000 + 300,
                               queryString=query)["queryId"]
        deadline = time.time() + 10
        while True:
            out = logs.get_query_results(queryId=qid)
            if out["status"] != "Running" or time.time() > deadline:
                break
            time.sleep(0.05)
        assert out["status"] == "Complete"
        return [{c["field"]: c["value"] for c in row} for row in out["results"]], out["statistics"], qid

    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(base / 1000))
    rows, stats, qid = run('fields @timestamp, level | filter level = "ERROR" | sort @timestamp asc')
    assert [(r["@timestamp"], r["level"]) for r in rows] == [(stamp[:-2] + "10.000", "ERROR"), (stamp[:-5] + "01:05.000", "ERROR")]
    assert (stats["recordsScanned"], stats["recordsMatched"]) == (4.0, 2.0)
    record = logs.get_log_record(logRecordPointer=rows[0]["@ptr"])["logRecord"]
    assert record["level"] == "ERROR" and record["user.id"] == "u1" and record["@log"] == f"{ACCOUNT}:app"
    assert record["@timestamp"] == str(base + 10_000)
    rows, _, _ = run("stats count(*) as n, avg(latency) as a by level")
    assert rows == [{"n": "1"}, {"level": "ERROR", "n": "2", "a": "210"}, {"level": "INFO", "n": "1", "a": "30"}]
    rows, _, _ = run("filter latency > 100 | stats sum(latency) as s, pct(latency, 50) as p")
    assert rows == [{"s": "420", "p": "120"}]
    with pytest.raises(ClientError) as info:
        logs.start_query(logGroupName="app", startTime=0, endTime=1, queryString="bogus")
    assert info.value.response["Error"]["Code"] == "MalformedQueryException"
    assert info.value.response["queryCompileError"]["location"] == {"startCharOffset": 0, "endCharOffset": 5}
    assert error_of(logs.stop_query, queryId=qid)[0] == "InvalidParameterException"
    assert error_of(logs.get_query_results, queryId="nope")[0] == "ResourceNotFoundException"
    assert logs.describe_queries(logGroupName="app")["queries"][0]["status"] == "Complete"
    assert error_of(logs.start_query, logGroupName="none", startTime=0, endTime=1, queryString="limit 1")[0] == \
        "ResourceNotFoundException"
    fields = logs.get_log_group_fields(logGroupName="app", time=base // 1000 + 60)["logGroupFields"]
    shares = {f["name"]: f["percent"] for f in fields}
    assert shares["@message"] == 100 and shares["level"] == 75 and shares["user.id"] == 75
    assert fields[0]["percent"] == 100 and [f["percent"] for f in fields] == sorted((f["percent"] for f in fields), reverse=True)


def test_insights_source_diff_and_functions(server):
    """SOURCE picks groups by prefix and class; diff compares with the period
    before; regex parse, unnest, count_distinct, stddev, earliest/latest and
    the string, IP and date functions through the real server."""
    logs = server.client("logs")
    base = (now_ms() // HOUR - 2) * HOUR  # two hours ago, on the hour
    for group in ["/app/web", "/app/api", "/other"]:
        logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName="s")
    logs.create_log_group(logGroupName="/app/cold", logGroupClass="INFREQUENT_ACCESS")
    logs.create_log_stream(logGroupName="/app/cold", logStreamName="s")
    # The previous hour: "GET /a" twice; this hour: "GET /a" three times and "POST /b" once.
    logs.put_log_events(logGroupName="/app/web", logStreamName="s", logEvents=[
        {"timestamp": base + 1_000, "message": "GET /a took 10 ms from 10.0.0.1"},
        {"timestamp": base + 2_000, "message": "GET /a took 30 ms from 10.0.0.2"},
        {"timestamp": base + HOUR + 1_000, "message": "GET /a took 20 ms from 10.0.0.3"},
        {"timestamp": base + HOUR + 2_000, "message": "GET /a took 40 ms from 192.168.1.9"},
        {"timestamp": base + HOUR + 3_000, "message": "GET /a took 60 ms from 10.0.0.3"},
        {"timestamp": base + HOUR + 4_000, "message": "POST /b took 5 ms from 10.0.0.1"},
    ])
    logs.put_log_events(logGroupName="/app/api", logStreamName="s", logEvents=[
        {"timestamp": base + HOUR + 5_000, "message": '{"items":[{"n":1},{"n":2}],"user":"  Ann  "}'},
    ])
    logs.put_log_events(logGroupName="/other", logStreamName="s", logEvents=[
        {"timestamp": base + HOUR + 6_000, "message": "GET /a took 99 ms from 10.9.9.9"},
    ])
    logs.put_log_events(logGroupName="/app/cold", logStreamName="s", logEvents=[
        {"timestamp": base + HOUR + 7_000, "message": "GET /a took 98 ms from 10.9.9.8"},
    ])

    def run(query, **where):
        where.setdefault("startTime", (base + HOUR) // 1000)
        where.setdefault("endTime", (base + 2 * HOUR) // 1000 - 1)
        qid = logs.start_query(queryString=query, **where)["queryId"]
        deadline = time.time() + 10
        while True:
            out = logs.get_query_results(queryId=qid)
            if out["status"] not in ("Running", "Scheduled") or time.time() > deadline:
                break
            time.sleep(0.05)
        assert out["status"] == "Complete", out
        return [{c["field"]: c["value"] for c in row if c["field"] != "@ptr"} for row in out["results"]]

    # SOURCE: STANDARD groups under /app (not /other, not the cold one).
    rows = run("SOURCE logGroups(namePrefix: ['/app'], class: 'STANDARD') | stats count(*) as n by @log")
    assert rows == [{"@log": f"{ACCOUNT}:/app/api", "n": "1"}, {"@log": f"{ACCOUNT}:/app/web", "n": "4"}]
    code = error_of(logs.start_query, logGroupName="/app/web", startTime=0, endTime=1,
                    queryString="SOURCE logGroups(namePrefix: ['/app']) | limit 1")[0]
    assert code == "InvalidParameterException"
    # Regex parse with named groups, then aggregations over the captures.
    rows = run(r"parse @message /(?<verb>[A-Z]+) (?<path>\S+) took (?<ms>\d+) ms from (?<ip>\S+)/"
               " | filter ispresent(verb)"
               " | stats count_distinct(ip) as ips, stddev(ms) as sd, earliest(ms) as first, latest(ms) as last,"
               " sortsFirst(ip) as lo by verb",
               logGroupName="/app/web")
    # GET ms = 20, 40, 60: sample standard deviation 20; one POST has none
    # (absent fields are left out of a row).
    assert rows == [{"verb": "GET", "ips": "2", "sd": "20", "first": "20", "last": "60", "lo": "10.0.0.3"},
                    {"verb": "POST", "ips": "1", "first": "5", "last": "5", "lo": "10.0.0.1"}]
    rows = run(r"parse @message /from (?<ip>\S+)/ | filter isIpv4InSubnet(ip, '10.0.0.0/24')"
               " | stats count(*) as n", logGroupName="/app/web")
    assert rows == [{"n": "3"}]
    # unnest over jsonParse, string functions.
    rows = run("fields jsonParse(@message) as j | unnest j.items into item"
               " | fields jsonStringify(item) as s, trim(user) as u, toupper(substr(trim(user), 0, 2)) as p"
               " | display s, u, p", logGroupName="/app/api")
    assert rows == [{"s": '{"n":1}', "u": "Ann", "p": "AN"}, {"s": '{"n":2}', "u": "Ann", "p": "AN"}]
    # datefloor formats as a timestamp.
    rows = run("stats count(*) as n by datefloor(@timestamp, 1h) as h", logGroupName="/app/web")
    assert rows == [{"h": time.strftime("%Y-%m-%d %H:%M:%S.000", time.gmtime((base + HOUR) / 1000)), "n": "4"}]
    # pattern then diff against the hour before.
    rows = run("pattern @message | diff", logGroupName="/app/web")
    changes = {r["@pattern"]: (r["@previousCount"], r["@currentCount"], r["@changeType"]) for r in rows}
    assert changes == {"GET /a took <*> ms from <*>": ("2", "3", "INCREASED"),
                       "POST /b took <*> ms from <*>": ("0", "1", "NEW")}, rows


def test_get_query_results_pages(server):
    """GetQueryResults pages a finished result with maxItems and nextToken
    (§10.2): the pages are exactly the rows of the unpaged call, the last page
    has no token, resultCount counts the whole result."""
    logs = server.client("logs")
    logs.create_log_group(logGroupName="app")
    logs.create_log_stream(logGroupName="app", logStreamName="s")
    t = now_ms() - 60_000
    logs.put_log_events(logGroupName="app", logStreamName="s",
                        logEvents=[{"timestamp": t + i, "message": f"e{i}"} for i in range(25)])
    qid = _start(logs, t // 1000)
    whole = _finished(logs, qid)
    assert whole["status"] == "Complete" and "nextToken" not in whole
    assert _messages(whole) == [f"e{i}" for i in range(25)]
    stats = whole["statistics"]
    assert stats["resultCount"] == 25.0 and stats["recordsMatched"] == 25.0
    assert (stats["logGroupsScanned"], stats["estimatedRecordsSkipped"], stats["estimatedBytesSkipped"]) == \
        (1.0, 0.0, 0.0)

    pages, kwargs = [], {}
    while True:
        out = logs.get_query_results(queryId=qid, maxItems=10, **kwargs)
        assert out["status"] == "Complete" and out["statistics"]["resultCount"] == 25.0
        pages.append(out["results"])
        if "nextToken" not in out:
            break
        assert out["nextToken"] != kwargs.get("nextToken")
        kwargs = {"nextToken": out["nextToken"]}
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [row for page in pages for row in page] == whole["results"]

    for bad in (0, 10_001):
        code, message, status = error_of(logs.get_query_results, queryId=qid, maxItems=bad)
        assert (code, status) == ("InvalidParameterException", 400)
        assert message.startswith(f"1 validation error detected: Value '{bad}' at 'maxItems' failed to satisfy constraint")
    token = logs.get_query_results(queryId=qid, maxItems=1)["nextToken"]
    other = _start(logs, t // 1000)
    _finished(logs, other)
    for bad in ("garbage", token[:-2] + ("AA" if not token.endswith("AA") else "BB")):
        assert error_of(logs.get_query_results, queryId=qid, nextToken=bad) == \
            ("InvalidParameterException", "The specified nextToken is invalid.", 400)
    # A token pages only the query it came from.
    assert error_of(logs.get_query_results, queryId=other, nextToken=token)[:2] == \
        ("InvalidParameterException", "The specified nextToken is invalid.")


def test_insights_dedup_and_the_default_row_cap(server):
    """dedup keeps the first row of each key; without a limit a query
    returns at most 10,000 rows while every matched event is counted."""
    logs = server.client("logs")
    logs.create_log_group(logGroupName="big")
    logs.create_log_stream(logGroupName="big", logStreamName="s")
    t = now_ms() - 600_000
    events = [{"timestamp": t + i, "message": f"user=u{i % 3} n={i}"} for i in range(10_001)]
    for i in range(0, len(events), 5_000):
        logs.put_log_events(logGroupName="big", logStreamName="s", logEvents=events[i:i + 5_000])

    def run(query):
        qid = logs.start_query(logGroupName="big", startTime=t // 1000, endTime=t // 1000 + 60,
                               queryString=query)["queryId"]
        out = _finished(logs, qid)
        assert out["status"] == "Complete", out
        return [{c["field"]: c["value"] for c in r if c["field"] != "@ptr"} for r in out["results"]], out

    rows, out = run("fields @message")
    assert len(rows) == 10_000
    assert (out["statistics"]["recordsMatched"], out["statistics"]["resultCount"]) == (10_001.0, 10_000.0)
    # Newest first: the last event put leads.
    assert rows[0] == {"@message": "user=u1 n=10000"}
    rows, _ = run('parse @message "user=* n=*" as u, n | sort n desc | dedup u | display u, n')
    assert rows == [{"u": "u1", "n": "10000"}, {"u": "u0", "n": "9999"}, {"u": "u2", "n": "9998"}]


def test_retention_deletes_expired_events_as_days_pass(tmp_path, monkeypatch):
    """A 1-day retention, then the server three days later (hidden clock
    offset; botocore shifted alike): the events are gone from reads and their
    segment leaves the disk; a group without retention keeps its events."""
    import datetime
    import os

    import botocore.auth

    def segments():
        found = []
        for root, _, files in os.walk(tmp_path / "data" / "objects" / "logs"):
            found += [os.path.join(root, f) for f in files if f.endswith(".twl")]
        return found

    srv = Server(str(tmp_path / "data"))
    srv.start()
    t = now_ms() - 3_600_000
    try:
        logs = srv.client("logs")
        for group in ["short", "kept"]:
            logs.create_log_group(logGroupName=group)
            logs.create_log_stream(logGroupName=group, logStreamName="s")
            logs.put_log_events(logGroupName=group, logStreamName="s",
                                logEvents=[{"timestamp": t, "message": f"{group} event"}])
        logs.put_retention_policy(logGroupName="short", retentionInDays=1)
    finally:
        assert srv.stop() == 0  # flushed: one segment per stream
    assert len(segments()) == 2
    real_now = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda *a, **k: real_now(*a, **k) + datetime.timedelta(days=3))
    srv.extra_env = {"TRAILWATCH_CLOCK_OFFSET_SECS": str(3 * 86400), "TRAILWATCH_FLUSH_INTERVAL_SECS": "1"}
    srv.start()
    try:
        logs = srv.client("logs")
        assert logs.get_log_events(logGroupName="short", logStreamName="s", startFromHead=True)["events"] == []
        assert logs.filter_log_events(logGroupName="short")["events"] == []
        stream = logs.describe_log_streams(logGroupName="short")["logStreams"][0]
        assert stream["storedBytes"] == 0 and "firstEventTimestamp" not in stream
        deadline = time.time() + 15
        while len(segments()) > 1 and time.time() < deadline:
            time.sleep(0.2)
        assert len(segments()) == 1
        # The segment left is the kept group's: its event still reads.
        kept = logs.get_log_events(logGroupName="kept", logStreamName="s", startFromHead=True)["events"]
        assert [e["message"] for e in kept] == ["kept event"]
    finally:
        srv.stop()
    assert not srv.unexpected_log_lines(), srv.unexpected_log_lines()


def test_aws_cli_logs(server):
    server.cli("logs", "create-log-group", "--log-group-name", "cli")
    server.cli("logs", "create-log-stream", "--log-group-name", "cli", "--log-stream-name", "s")
    t = now_ms()
    server.cli("logs", "put-log-events", "--log-group-name", "cli", "--log-stream-name", "s",
               "--log-events", f"timestamp={t},message=hello world")
    got = json.loads(server.cli("logs", "get-log-events", "--log-group-name", "cli", "--log-stream-name", "s",
                                "--start-from-head").stdout)
    assert [e["message"] for e in got["events"]] == ["hello world"]
    found = json.loads(server.cli("logs", "filter-log-events", "--log-group-name", "cli",
                                  "--filter-pattern", "world").stdout)
    assert [e["message"] for e in found["events"]] == ["hello world"]


def test_query_definitions(server):
    logs = server.client("logs")
    created = logs.put_query_definition(
        name="errors", queryString="fields @message | filter level = {{level}}", logGroupNames=["app", "/aws/x"],
        parameters=[{"name": "level", "defaultValue": "ERROR", "description": "severity"}])["queryDefinitionId"]
    for name in ["b-report", "a-report"]:
        logs.put_query_definition(name=name, queryString="stats count(*)")
    got = logs.describe_query_definitions()["queryDefinitions"]
    assert [d["name"] for d in got] == ["a-report", "b-report", "errors"]
    errors = got[2]
    assert errors["queryDefinitionId"] == created and errors["queryLanguage"] == "CWLI"
    assert errors["logGroupNames"] == ["app", "/aws/x"]
    assert errors["parameters"] == [{"name": "level", "defaultValue": "ERROR", "description": "severity"}]
    assert abs(errors["lastModified"] - now_ms()) < 60_000
    assert [d["name"] for d in logs.describe_query_definitions(queryDefinitionNamePrefix="err")["queryDefinitions"]] == ["errors"]

    # Paging: two pages of two, then one.
    first = logs.describe_query_definitions(maxResults=2)
    assert [d["name"] for d in first["queryDefinitions"]] == ["a-report", "b-report"]
    second = logs.describe_query_definitions(maxResults=2, nextToken=first["nextToken"])
    assert [d["name"] for d in second["queryDefinitions"]] == ["errors"] and "nextToken" not in second
    assert error_of(logs.describe_query_definitions, nextToken="bogus")[0] == "InvalidParameterException"

    # An update replaces name, string and groups; nothing is kept.
    assert logs.put_query_definition(queryDefinitionId=created, name="errs", queryString="limit 5")["queryDefinitionId"] == created
    updated = logs.describe_query_definitions(queryDefinitionNamePrefix="errs")["queryDefinitions"]
    assert len(updated) == 1 and updated[0]["logGroupNames"] == [] and "parameters" not in updated[0]
    assert updated[0]["queryString"] == "limit 5"

    # The same clientToken twice creates one definition.
    token = "0123456789abcdef0123456789abcdef-tok"
    again = [logs.put_query_definition(name="once", queryString="limit 1", clientToken=token)["queryDefinitionId"]
             for _ in range(2)]
    assert again[0] == again[1]
    assert len(logs.describe_query_definitions(queryDefinitionNamePrefix="once")["queryDefinitions"]) == 1

    code, message, status = error_of(logs.put_query_definition, name="n" * 256, queryString="limit 1")
    assert (code, status) == ("InvalidParameterException", 400)
    assert message == "1 validation error detected: Value '" + "n" * 256 + \
        "' at 'name' failed to satisfy constraint: Member must have length less than or equal to 255"
    assert error_of(logs.put_query_definition, name="q", queryString="x" * 10_001)[0] == "InvalidParameterException"
    assert error_of(logs.put_query_definition, name="q", queryString="limit 1",
                    parameters=[{"name": f"p{i}"} for i in range(21)])[0] == "InvalidParameterException"
    assert error_of(logs.put_query_definition, name="q", queryString="limit 1",
                    parameters=[{"name": "9lives"}])[0] == "InvalidParameterException"
    assert error_of(logs.put_query_definition, name="q", queryString="limit 1",
                    logGroupNames=["no spaces"])[0] == "InvalidParameterException"
    assert error_of(logs.put_query_definition, queryDefinitionId="nope", name="q", queryString="limit 1")[:3:2] == \
        ("ResourceNotFoundException", 400)
    assert error_of(logs.describe_query_definitions, maxResults=1001)[0] == "InvalidParameterException"

    assert logs.delete_query_definition(queryDefinitionId=created)["success"] is True
    assert error_of(logs.delete_query_definition, queryDefinitionId=created)[:3:2] == ("ResourceNotFoundException", 400)
    listed = json.loads(server.cli("logs", "describe-query-definitions", "--query-definition-name-prefix", "a-").stdout)
    assert [d["name"] for d in listed["queryDefinitions"]] == ["a-report"]
    # Each write left its audit record, with the id it answered.
    ct = server.client("cloudtrail")
    puts = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "PutQueryDefinition"}])
    answered = {json.loads(e["CloudTrailEvent"]).get("responseElements", {}).get("queryDefinitionId")
                for e in puts["Events"] if "errorCode" not in json.loads(e["CloudTrailEvent"])}
    assert created in answered
    deletes = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "DeleteQueryDefinition"}])
    assert [json.loads(e["CloudTrailEvent"]).get("readOnly") for e in deletes["Events"]] == [False, False]


def _seed_insights(logs):
    logs.create_log_group(logGroupName="app")
    logs.create_log_stream(logGroupName="app", logStreamName="s")
    t = now_ms() - 60_000
    logs.put_log_events(logGroupName="app", logStreamName="s", logEvents=[
        {"timestamp": t, "message": "first"}, {"timestamp": t + 1, "message": "second"}])
    return t // 1000


def _start(logs, start_s):
    return logs.start_query(logGroupName="app", startTime=start_s - 5, endTime=start_s + 60,
                            queryString="fields @message | sort @timestamp asc")["queryId"]


def _finished(logs, qid, timeout=20):
    deadline = time.time() + timeout
    while True:
        out = logs.get_query_results(queryId=qid)
        if out["status"] not in ("Scheduled", "Running") or time.time() > deadline:
            return out
        time.sleep(0.05)


def _messages(out):
    return [next(c["value"] for c in row if c["field"] == "@message") for row in out["results"]]


def test_insights_queries_survive_a_restart(tmp_path):
    srv = Server(str(tmp_path / "data"))
    srv.start()
    try:
        logs = srv.client("logs")
        start_s = _seed_insights(logs)
        done = _start(logs, start_s)
        before = _finished(logs, done)
        assert before["status"] == "Complete" and _messages(before) == ["first", "second"]
        described = [q for q in logs.describe_queries()["queries"] if q["queryId"] == done]
    finally:
        assert srv.stop() == 0
    # Evaluations now wait 3 s, so a query is still Running when the server stops.
    srv.extra_env = {"TRAILWATCH_INSIGHTS_DELAY_MS": "3000"}
    srv.start()
    try:
        logs = srv.client("logs")
        after = logs.get_query_results(queryId=done)
        for out in (before, after):
            out.pop("ResponseMetadata")
        assert after == before
        assert [q for q in logs.describe_queries()["queries"] if q["queryId"] == done] == described
        interrupted = _start(logs, start_s)
        assert logs.get_query_results(queryId=interrupted)["status"] == "Running"
    finally:
        assert srv.stop() == 0
    srv.extra_env = {}
    srv.start()
    try:
        logs = srv.client("logs")
        rerun = _finished(logs, interrupted)
        assert rerun["status"] == "Complete" and _messages(rerun) == ["first", "second"]
        statuses = {q["queryId"]: q["status"] for q in logs.describe_queries(logGroupName="app")["queries"]}
        assert statuses == {done: "Complete", interrupted: "Complete"}
        assert "running again the insights queries a stop interrupted" in srv.log()
    finally:
        srv.stop()
    assert not srv.unexpected_log_lines(), srv.unexpected_log_lines()


def test_insights_partial_results_while_running(tmp_path):
    """A query over segment blocks reads them 32 at a time; between batches
    GetQueryResults shows Running with the rows and statistics so far. The
    hidden delay pauses before the query and after each batch. (The query
    reads messages: a bare count would be answered from block directories.)"""
    srv = Server(str(tmp_path / "data"))
    srv.start()
    base = (now_ms() // HOUR - 1) * HOUR
    try:
        logs = srv.client("logs")
        logs.create_log_group(logGroupName="many")
        # 40 streams: a flush writes one segment (one block) per stream.
        for s in range(40):
            logs.create_log_stream(logGroupName="many", logStreamName=f"s{s:02}")
            logs.put_log_events(logGroupName="many", logStreamName=f"s{s:02}", logEvents=[
                {"timestamp": base + s * 7000 + i, "message": f"stream {s} event {i}"} for i in range(5)])
    finally:
        assert srv.stop() == 0  # a graceful stop flushes every event into segments
    srv.extra_env = {"TRAILWATCH_INSIGHTS_DELAY_MS": "2500"}
    srv.start()
    try:
        logs = srv.client("logs")
        qid = logs.start_query(logGroupName="many", startTime=base // 1000, endTime=base // 1000 + 3600,
                               queryString='filter @message like "event" | stats count(*) as n')["queryId"]
        time.sleep(3.5)  # past the first pause and the first batch, inside the second pause
        out = logs.get_query_results(queryId=qid)
        assert out["status"] == "Running"
        assert [{c["field"]: c["value"] for c in r} for r in out["results"]] == [{"n": "160"}]
        assert out["statistics"]["recordsScanned"] == 160.0
        deadline = time.time() + 15
        while out["status"] == "Running" and time.time() < deadline:
            time.sleep(0.2)
            out = logs.get_query_results(queryId=qid)
        assert out["status"] == "Complete"
        assert [{c["field"]: c["value"] for c in r} for r in out["results"]] == [{"n": "200"}]
        assert (out["statistics"]["recordsScanned"], out["statistics"]["recordsMatched"]) == (200.0, 200.0)
        # Counting by time over blocks: from their directory entries (blocks
        # within one minute) and timestamps, against counts made here.
        qid = logs.start_query(logGroupName="many", startTime=base // 1000, endTime=base // 1000 + 3600,
                               queryString="stats count(*) as n by bin(1m) as m")["queryId"]
        deadline = time.time() + 15
        out = logs.get_query_results(queryId=qid)
        while out["status"] == "Running" and time.time() < deadline:
            time.sleep(0.2)
            out = logs.get_query_results(queryId=qid)
        want = {}
        for s in range(40):
            for i in range(5):
                minute = (base + s * 7000 + i) // 60_000 * 60_000
                want[minute] = want.get(minute, 0) + 1
        expected = [{"m": time.strftime("%Y-%m-%d %H:%M:%S.000", time.gmtime(m / 1000)), "n": str(n)}
                    for m, n in sorted(want.items())]
        assert [{c["field"]: c["value"] for c in r} for r in out["results"]] == expected
        assert out["statistics"]["recordsScanned"] == 200.0
    finally:
        srv.stop()
    assert not srv.unexpected_log_lines(), srv.unexpected_log_lines()


def test_stop_query_cancels_a_running_query(tmp_path):
    srv = Server(str(tmp_path / "data"), extra_env={"TRAILWATCH_INSIGHTS_DELAY_MS": "3000"})
    srv.start()
    try:
        logs = srv.client("logs")
        start_s = _seed_insights(logs)
        qid = _start(logs, start_s)
        other = _start(logs, start_s)
        # Two queries run at once; stopping one leaves the other to finish.
        running = [q["queryId"] for q in logs.describe_queries(status="Running")["queries"]]
        assert sorted(running) == sorted([qid, other])
        assert logs.get_query_results(queryId=qid)["status"] == "Running"
        assert logs.stop_query(queryId=qid)["success"] is True
        out = logs.get_query_results(queryId=qid)
        assert (out["status"], out["results"]) == ("Cancelled", [])
        code, message, status = error_of(logs.stop_query, queryId=qid)
        assert (code, message, status) == ("InvalidParameterException", f"Query {qid} is not running", 400)
        time.sleep(3.5)  # the evaluation wakes up, sees Cancelled, and stores nothing
        assert logs.get_query_results(queryId=qid)["status"] == "Cancelled"
        done = _finished(logs, other)
        assert done["status"] == "Complete" and _messages(done) == ["first", "second"]
        assert error_of(logs.stop_query, queryId="nope")[0] == "ResourceNotFoundException"
    finally:
        assert srv.stop() == 0
    srv.extra_env = {}
    srv.start()
    try:
        logs = srv.client("logs")
        assert logs.get_query_results(queryId=qid)["status"] == "Cancelled"
        assert logs.describe_queries(status="Cancelled")["queries"][0]["queryId"] == qid
    finally:
        srv.stop()
    assert not srv.unexpected_log_lines(), srv.unexpected_log_lines()
