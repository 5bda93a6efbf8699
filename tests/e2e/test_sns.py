"""SNS subset end to end (issue 5): topics with paging, an http subscription to
a local receiver, SubscriptionConfirmation and Notification deliveries whose
SignatureVersion 2 signatures are checked with the certificate served at
SigningCertURL (through the `cryptography` package, not trailwatch's code),
retries that end in a counted failure, and the SNS error envelope."""
import base64
import http.server
import json
import queue
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from conftest import ACCOUNT, REGION, Server

NOTIFICATION_FIELDS = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
CONFIRMATION_FIELDS = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]


class Receiver:
    """An http.server on 127.0.0.1 (OS-chosen port) that queues every POST."""

    def __init__(self, status=200):
        self.messages = queue.Queue()
        self.status = status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                outer.messages.put((dict((k.lower(), v) for k, v in self.headers.items()), body))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def next(self, timeout=15):
        return self.messages.get(timeout=timeout)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def verify(message, fields):
    """Checks a SignatureVersion 2 signature the way a receiver would."""
    assert message["SignatureVersion"] == "2"
    pem = urllib.request.urlopen(message["SigningCertURL"], timeout=10).read()
    cert = x509.load_pem_x509_certificate(pem)
    canonical = "".join(f"{name}\n{message[name]}\n" for name in fields if name in message)
    cert.public_key().verify(
        base64.b64decode(message["Signature"]),
        canonical.encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    # A changed field must break the signature.
    tampered = canonical.replace(message["MessageId"], "00000000-0000-0000-0000-000000000000")
    with pytest.raises(Exception):
        cert.public_key().verify(
            base64.b64decode(message["Signature"]), tampered.encode(), padding.PKCS1v15(), hashes.SHA256()
        )


def test_topics_are_idempotent_paged_and_deleted(server):
    sns = server.client("sns")
    arn = sns.create_topic(Name="ops")["TopicArn"]
    assert arn == f"arn:aws:sns:{REGION}:{ACCOUNT}:ops"
    assert sns.create_topic(Name="ops")["TopicArn"] == arn
    names = [f"t{i:03d}" for i in range(120)]
    for name in names:
        sns.create_topic(Name=name)
    first = sns.list_topics()
    assert len(first["Topics"]) == 100 and "NextToken" in first
    second = sns.list_topics(NextToken=first["NextToken"])
    assert "NextToken" not in second
    listed = [t["TopicArn"].rsplit(":", 1)[1] for t in first["Topics"] + second["Topics"]]
    assert listed == sorted(names + ["ops"])
    paged = [t["TopicArn"] for page in sns.get_paginator("list_topics").paginate() for t in page["Topics"]]
    assert len(paged) == 121

    sns.delete_topic(TopicArn=arn)
    sns.delete_topic(TopicArn=arn)  # idempotent, as at AWS
    with pytest.raises(ClientError) as e:
        sns.get_topic_attributes(TopicArn=arn)
    assert e.value.response["Error"]["Code"] == "NotFound"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    out = server.cli("sns", "list-topics")
    assert len(json.loads(out.stdout)["Topics"]) == 120


def test_subscribe_confirm_publish_with_signatures(server, receiver):
    sns = server.client("sns")
    arn = sns.create_topic(Name="alerts", Attributes={"DisplayName": "Alerts"})["TopicArn"]
    sub = sns.subscribe(TopicArn=arn, Protocol="http", Endpoint=receiver.url)
    assert sub["SubscriptionArn"] == "pending confirmation"

    headers, body = receiver.next()
    confirmation = json.loads(body)
    assert confirmation["Type"] == "SubscriptionConfirmation"
    assert headers["x-amz-sns-message-type"] == "SubscriptionConfirmation"
    assert headers["x-amz-sns-message-id"] == confirmation["MessageId"]
    assert headers["x-amz-sns-topic-arn"] == arn
    assert confirmation["TopicArn"] == arn
    assert "Action=ConfirmSubscription" in confirmation["SubscribeURL"]
    assert confirmation["Token"] in confirmation["SubscribeURL"]
    assert confirmation["SigningCertURL"].startswith(server.endpoint + "/")
    verify(confirmation, CONFIRMATION_FIELDS)

    attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attributes["SubscriptionsPending"] == "1"
    assert attributes["SubscriptionsConfirmed"] == "0"
    # Pending subscriptions get nothing.
    sns.publish(TopicArn=arn, Message="early")

    pending = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert [s["SubscriptionArn"] for s in pending] == ["PendingConfirmation"]
    # Subscribing the same endpoint again resends the confirmation.
    assert sns.subscribe(TopicArn=arn, Protocol="http", Endpoint=receiver.url,
                         ReturnSubscriptionArn=True)["SubscriptionArn"].startswith(arn + ":")
    _, again = receiver.next()
    assert json.loads(again)["Token"] == confirmation["Token"]
    with pytest.raises(ClientError) as e:
        sns.confirm_subscription(TopicArn=arn, Token="not-the-token")
    assert e.value.response["Error"]["Code"] == "InvalidParameter"
    sub_arn = sns.confirm_subscription(TopicArn=arn, Token=confirmation["Token"])["SubscriptionArn"]
    assert sub_arn.startswith(arn + ":")
    listed = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert listed == [{
        "SubscriptionArn": sub_arn, "Owner": ACCOUNT, "Protocol": "http",
        "Endpoint": receiver.url, "TopicArn": arn,
    }]
    assert sns.list_subscriptions()["Subscriptions"] == listed

    message_id = sns.publish(
        TopicArn=arn, Subject="ALARM: cpu", Message='{"AlarmName":"cpu"}',
        MessageAttributes={"severity": {"DataType": "String", "StringValue": "high"}},
    )["MessageId"]
    headers, body = receiver.next()
    note = json.loads(body)
    assert note["Type"] == "Notification"
    assert note["MessageId"] == message_id
    assert (note["Subject"], note["Message"], note["TopicArn"]) == ("ALARM: cpu", '{"AlarmName":"cpu"}', arn)
    assert note["MessageAttributes"] == {"severity": {"Type": "String", "Value": "high"}}
    assert "Action=Unsubscribe" in note["UnsubscribeURL"]
    assert headers["x-amz-sns-message-type"] == "Notification"
    assert headers["x-amz-sns-message-id"] == message_id
    assert headers["x-amz-sns-topic-arn"] == arn
    assert headers["x-amz-sns-subscription-arn"] == sub_arn
    assert headers["content-type"].startswith("text/plain")
    verify(note, NOTIFICATION_FIELDS)

    # No subject: the canonical string leaves the pair out.
    sns.publish(TopicArn=arn, Message="plain")
    _, body = receiver.next()
    plain = json.loads(body)
    assert "Subject" not in plain and plain["Message"] == "plain"
    verify(plain, NOTIFICATION_FIELDS)
    assert receiver.messages.empty(), "the early message went to a pending subscription"

    attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attributes["DisplayName"] == "Alerts"
    assert attributes["Owner"] == ACCOUNT
    assert attributes["SubscriptionsConfirmed"] == "1"
    assert json.loads(attributes["Policy"])["Statement"][0]["Resource"] == arn
    assert "http" in json.loads(attributes["EffectiveDeliveryPolicy"])
    sns.set_topic_attributes(TopicArn=arn, AttributeName="DisplayName", AttributeValue="Ops")
    policy = '{"http":{"defaultHealthyRetryPolicy":{"numRetries":5}}}'
    sns.set_topic_attributes(TopicArn=arn, AttributeName="DeliveryPolicy", AttributeValue=policy)
    attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attributes["DisplayName"] == "Ops"
    assert json.loads(attributes["EffectiveDeliveryPolicy"]) == json.loads(policy)

    sns.unsubscribe(SubscriptionArn=sub_arn)
    attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert (attributes["SubscriptionsConfirmed"], attributes["SubscriptionsDeleted"]) == ("0", "1")
    assert sns.list_subscriptions()["Subscriptions"] == []


def test_errors(server):
    sns = server.client("sns")
    arn = sns.create_topic(Name="errs")["TopicArn"]

    def code(call, **kwargs):
        with pytest.raises(ClientError) as e:
            call(**kwargs)
        return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]

    assert code(sns.publish, TopicArn=arn, Message="x" * (256 * 1024 + 1)) == ("InvalidParameter", 400)
    assert sns.publish(TopicArn=arn, Message="x" * (256 * 1024))["MessageId"]
    missing = f"arn:aws:sns:{REGION}:{ACCOUNT}:missing"
    assert code(sns.publish, TopicArn=missing, Message="x") == ("NotFound", 404)
    assert code(sns.create_topic, Name="bad name") == ("InvalidParameter", 400)
    assert code(sns.get_topic_attributes, TopicArn="not-an-arn") == ("InvalidParameter", 400)
    assert code(sns.subscribe, TopicArn=arn, Protocol="email", Endpoint="a@example.com") == ("InvalidParameter", 400)
    assert code(sns.subscribe, TopicArn=arn, Protocol="https", Endpoint="http://127.0.0.1:1/") == ("InvalidParameter", 400)
    assert code(sns.set_topic_attributes, TopicArn=arn, AttributeName="Owner", AttributeValue="x") == ("InvalidParameter", 400)
    assert code(sns.list_topics, NextToken="garbage") == ("InvalidParameter", 400)
    assert code(sns.unsubscribe, SubscriptionArn=arn + ":0000") == ("NotFound", 404)


def test_failed_deliveries_are_retried_and_counted(tmp_path):
    srv = Server(str(tmp_path / "data"), extra_env={"TRAILWATCH_SNS_RETRY_DELAYS_MS": "50,100"})
    srv.allowed_warnings.append("failed to deliver sns message")
    srv.start()
    try:
        sns = srv.client("sns")
        arn = sns.create_topic(Name="flaky")["TopicArn"]
        # A port nothing listens on: every attempt is refused.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
        sns.subscribe(TopicArn=arn, Protocol="http", Endpoint=dead)
        deadline = time.time() + 15
        while time.time() < deadline:
            attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
            if attributes["TrailwatchDeliveriesFailed"] == "1":
                break
            time.sleep(0.1)
        assert attributes["TrailwatchDeliveriesFailed"] == "1"
        assert "failed to deliver sns message" in srv.log()
        plain_log = re.sub(r"\x1b\[[0-9;]*m", "", srv.log())
        assert "attempts=3" in plain_log  # the first try and one retry per delay
    finally:
        srv.stop()
    assert not srv.unexpected_log_lines()


def test_subscribe_url_confirms_without_credentials(server, receiver):
    sns = server.client("sns")
    arn = sns.create_topic(Name="byurl")["TopicArn"]
    sns.subscribe(TopicArn=arn, Protocol="http", Endpoint=receiver.url)
    _, body = receiver.next()
    confirmation = json.loads(body)
    url = confirmation["SubscribeURL"]
    assert url.startswith(server.endpoint + "/?")

    # A wrong token is refused, in the SNS error envelope.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url.replace(confirmation["Token"], "0" * 16), timeout=10)
    assert e.value.code == 400
    assert b"<Code>InvalidParameter</Code>" in e.value.read()
    # Other operations still need credentials.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(server.endpoint + "/?Action=ListTopics&Version=2010-03-31", timeout=10)
    assert e.value.code == 403

    answer = urllib.request.urlopen(url, timeout=10).read().decode()
    assert "<ConfirmSubscriptionResult><SubscriptionArn>" + arn + ":" in answer
    (sub,) = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert sub["SubscriptionArn"].startswith(arn + ":")

    sns.publish(TopicArn=arn, Message="after url confirmation")
    headers, body = receiver.next()
    assert json.loads(body)["Message"] == "after url confirmation"
    assert headers["x-amz-sns-subscription-arn"] == sub["SubscriptionArn"]


def test_topics_subscriptions_and_key_survive_restart(tmp_path, receiver):
    srv = Server(str(tmp_path / "data"))
    srv.start()
    try:
        sns = srv.client("sns")
        arn = sns.create_topic(Name="durable", Attributes={"DisplayName": "D"})["TopicArn"]
        sns.subscribe(TopicArn=arn, Protocol="http", Endpoint=receiver.url)
        first = json.loads(receiver.next()[1])
        sns.confirm_subscription(TopicArn=arn, Token=first["Token"])
        cert_before = urllib.request.urlopen(first["SigningCertURL"], timeout=10).read()
        events = srv.client("cloudtrail").lookup_events(
            LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": "durable"}]
        )["Events"]
        assert {"CreateTopic", "Subscribe", "ConfirmSubscription"} <= {e["EventName"] for e in events}
    finally:
        srv.stop()
    srv.start()
    try:
        sns = srv.client("sns")
        assert [t["TopicArn"] for t in sns.list_topics()["Topics"]] == [arn]
        assert sns.get_topic_attributes(TopicArn=arn)["Attributes"]["DisplayName"] == "D"
        (sub,) = sns.list_subscriptions()["Subscriptions"]
        assert sub["SubscriptionArn"].startswith(arn + ":")
        sns.publish(TopicArn=arn, Message="after restart")
        note = json.loads(receiver.next()[1])
        assert note["Message"] == "after restart"
        cert_after = urllib.request.urlopen(note["SigningCertURL"], timeout=10).read()
        assert cert_after == cert_before
        verify(note, NOTIFICATION_FIELDS)
    finally:
        srv.stop()
    assert not srv.unexpected_log_lines()
