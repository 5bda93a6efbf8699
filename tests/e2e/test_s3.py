"""The S3 facade (path-style) end to end with boto3's s3 client and the aws CLI:
buckets in two regions, objects with metadata, v1 and v2 listings with
prefixes, markers, delimiters and pages, errors in S3's envelope, presigned
GETs, and the CloudTrail records S3 calls leave (management calls in
LookupEvents, object calls as data events that never reach it)."""
import json
import os
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY


def s3_client(server, region=REGION):
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=region,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"}),
    )


def error_of(call, **kwargs):
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def lookup(server, region, event_name):
    ct = server.client("cloudtrail", region=region)
    events = []
    pages = ct.get_paginator("lookup_events").paginate(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": event_name}])
    for page in pages:
        events.extend(json.loads(e["CloudTrailEvent"]) for e in page["Events"])
    return events


def test_buckets_in_two_regions_and_their_records(server):
    s3 = s3_client(server)
    s3.create_bucket(Bucket="home-bucket")
    s3_eu = s3_client(server, "eu-west-1")
    s3_eu.create_bucket(Bucket="eu-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})

    assert s3.get_bucket_location(Bucket="home-bucket")["LocationConstraint"] is None
    assert s3.get_bucket_location(Bucket="eu-bucket")["LocationConstraint"] == "eu-west-1"
    head = s3.head_bucket(Bucket="eu-bucket")
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "eu-west-1"
    listed = s3.list_buckets()
    assert [b["Name"] for b in listed["Buckets"]] == ["eu-bucket", "home-bucket"]
    assert listed["Owner"]["DisplayName"] == ACCOUNT

    assert error_of(s3.create_bucket, Bucket="home-bucket") == ("BucketAlreadyOwnedByYou", 409)
    assert error_of(s3.create_bucket, Bucket="Bad_Name") == ("InvalidBucketName", 400)
    assert error_of(s3.get_bucket_location, Bucket="no-such-bucket") == ("NoSuchBucket", 404)
    # HEAD errors carry no body: botocore reports the status.
    assert error_of(s3.head_bucket, Bucket="no-such-bucket") == ("404", 404)

    s3.put_object(Bucket="home-bucket", Key="k", Body=b"v")
    assert error_of(s3.delete_bucket, Bucket="home-bucket") == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket="home-bucket", Key="k")
    s3.delete_bucket(Bucket="home-bucket")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["eu-bucket"]

    # Management calls reach LookupEvents, in the bucket's region.
    created = [e for e in lookup(server, "eu-west-1", "CreateBucket") if "errorCode" not in e]
    assert len(created) == 1
    record = created[0]
    assert record["eventSource"] == "s3.amazonaws.com"
    assert record["awsRegion"] == "eu-west-1"
    assert record["requestParameters"]["bucketName"] == "eu-bucket"
    assert record["requestParameters"]["CreateBucketConfiguration"]["LocationConstraint"] == "eu-west-1"
    assert record["resources"] == [{"accountId": ACCOUNT, "type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::eu-bucket"}]
    assert record["userIdentity"]["accessKeyId"] == ACCESS_KEY
    home = lookup(server, REGION, "CreateBucket")
    assert {e.get("errorCode") for e in home} == {None, "BucketAlreadyOwnedByYou", "InvalidBucketName"}
    assert lookup(server, REGION, "DeleteBucket")[0]["requestParameters"]["bucketName"] == "home-bucket"
    # Object calls are data events: never in LookupEvents.
    assert lookup(server, REGION, "PutObject") == []


def test_objects_metadata_listings_and_errors(server):
    s3 = s3_client(server)
    s3.create_bucket(Bucket="objects")
    put = s3.put_object(Bucket="objects", Key="AWSLogs/d/1.json.gz", Body=b"first", ContentType="application/json",
                        Metadata={"signature": "abc123", "signature-algorithm": "SHA256withRSA"})
    assert put["ETag"] == '"8b04d5e3775d298e78455efc5ca404d5"'  # MD5 of b"first"
    got = s3.get_object(Bucket="objects", Key="AWSLogs/d/1.json.gz")
    assert got["Body"].read() == b"first"
    assert got["ContentType"] == "application/json"
    assert got["Metadata"] == {"signature": "abc123", "signature-algorithm": "SHA256withRSA"}
    assert got["ETag"] == put["ETag"] and got["ContentLength"] == 5
    head = s3.head_object(Bucket="objects", Key="AWSLogs/d/1.json.gz")
    assert head["ContentLength"] == 5 and head["Metadata"]["signature"] == "abc123"
    assert head["LastModified"] == got["LastModified"]
    ranged = s3.get_object(Bucket="objects", Key="AWSLogs/d/1.json.gz", Range="bytes=1-3")
    assert ranged["Body"].read() == b"irs" and ranged["ContentRange"] == "bytes 1-3/5"

    odd_keys = ["AWSLogs/d/2.json.gz", "AWSLogs/d/a b+c~é.json.gz", "AWSLogs/e/3.json.gz", "top"]
    for key in odd_keys:
        s3.put_object(Bucket="objects", Key=key, Body=key.encode())
    assert s3.get_object(Bucket="objects", Key="AWSLogs/d/a b+c~é.json.gz")["Body"].read() == "AWSLogs/d/a b+c~é.json.gz".encode()

    everything = [o["Key"] for o in s3.list_objects(Bucket="objects")["Contents"]]
    assert everything == sorted(["AWSLogs/d/1.json.gz", *odd_keys], key=lambda k: k.encode())
    listed = s3.list_objects(Bucket="objects", Prefix="AWSLogs/d", Marker="AWSLogs/d/1.json.gz")
    assert [o["Key"] for o in listed["Contents"]] == ["AWSLogs/d/2.json.gz", "AWSLogs/d/a b+c~é.json.gz"]
    assert listed["Contents"][0]["Size"] == len("AWSLogs/d/2.json.gz")
    assert listed["Contents"][0]["StorageClass"] == "STANDARD"
    # Pages of one, through botocore's paginator (NextMarker).
    pages = list(s3.get_paginator("list_objects").paginate(Bucket="objects", PaginationConfig={"PageSize": 1}))
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == everything
    assert len(pages) == 5 and pages[0]["IsTruncated"] and not pages[-1]["IsTruncated"]
    folders = s3.list_objects(Bucket="objects", Prefix="AWSLogs/", Delimiter="/")
    assert [p["Prefix"] for p in folders["CommonPrefixes"]] == ["AWSLogs/d/", "AWSLogs/e/"]
    assert "Contents" not in folders
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="objects", PaginationConfig={"PageSize": 2}))
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == everything
    assert [p["KeyCount"] for p in pages] == [2, 2, 1]
    after = s3.list_objects_v2(Bucket="objects", StartAfter="AWSLogs/e/3.json.gz")
    assert [o["Key"] for o in after["Contents"]] == ["top"] and after["StartAfter"] == "AWSLogs/e/3.json.gz"

    assert error_of(s3.get_object, Bucket="objects", Key="AWSLogs/none") == ("NoSuchKey", 404)
    assert error_of(s3.head_object, Bucket="objects", Key="AWSLogs/none") == ("404", 404)
    assert error_of(s3.get_object, Bucket="no-such-bucket", Key="k") == ("NoSuchBucket", 404)
    assert error_of(s3.put_object, Bucket="objects", Key="top/inner", Body=b"x") == ("InvalidArgument", 400)
    server.allowed_warnings.append("request failed on the server side")
    assert error_of(s3.copy_object, Bucket="objects", Key="copy",
                    CopySource={"Bucket": "objects", "Key": "top"}) == ("NotImplemented", 501)

    # A presigned GET (Signature Version 4: botocore presigns with version 2
    # unless told), fetched without any SDK.
    presigner = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                             aws_secret_access_key=SECRET_KEY,
                             config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": "objects", "Key": "top"}, ExpiresIn=300)
    with urllib.request.urlopen(url) as response:
        assert response.read() == b"top"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
    assert info.value.code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in info.value.read()
    version_2 = s3.generate_presigned_url("get_object", Params={"Bucket": "objects", "Key": "top"}, ExpiresIn=300)
    assert "AWSAccessKeyId=" in version_2
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(version_2)
    assert info.value.code == 403 and b"Signature Version 4" in info.value.read()

    # Another account's key is refused.
    wrong = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id="AKIAUNKNOWN000000000",
                         aws_secret_access_key=SECRET_KEY, config=Config(s3={"addressing_style": "path"},
                                                                         retries={"max_attempts": 1}))
    assert error_of(wrong.list_buckets) == ("InvalidAccessKeyId", 403)

    s3.delete_object(Bucket="objects", Key="top")
    s3.delete_object(Bucket="objects", Key="top")  # a missing key is no error
    assert error_of(s3.get_object, Bucket="objects", Key="top") == ("NoSuchKey", 404)


def test_aws_cli_s3_and_s3api(server, tmp_path):
    assert server.cli("s3", "mb", "s3://cli-bucket").returncode == 0
    local = tmp_path / "report.txt"
    local.write_text("hello from the cli\n")
    server.cli("s3", "cp", str(local), "s3://cli-bucket/reports/2026/report.txt")
    server.cli("s3", "cp", str(local), "s3://cli-bucket/reports/2026/second.txt", "--metadata", "team=core")
    server.cli("s3", "cp", str(local), "s3://cli-bucket/top.txt")

    listing = server.cli("s3", "ls", "s3://cli-bucket/reports/2026/").stdout
    assert "report.txt" in listing and "second.txt" in listing and "top.txt" not in listing
    assert "cli-bucket" in server.cli("s3", "ls").stdout
    recursive = server.cli("s3", "ls", "s3://cli-bucket", "--recursive").stdout
    assert [line.split()[-1] for line in recursive.splitlines()] == [
        "reports/2026/report.txt", "reports/2026/second.txt", "top.txt"]

    downloaded = tmp_path / "back.txt"
    server.cli("s3", "cp", "s3://cli-bucket/reports/2026/report.txt", str(downloaded))
    assert downloaded.read_text() == "hello from the cli\n"

    location = json.loads(server.cli("s3api", "get-bucket-location", "--bucket", "cli-bucket").stdout)
    assert location["LocationConstraint"] is None
    objects = json.loads(server.cli("s3api", "list-objects", "--bucket", "cli-bucket", "--prefix", "reports/",
                                    "--marker", "reports/2026/report.txt").stdout)
    assert [o["Key"] for o in objects["Contents"]] == ["reports/2026/second.txt"]
    head = json.loads(server.cli("s3api", "head-object", "--bucket", "cli-bucket",
                                 "--key", "reports/2026/second.txt").stdout)
    assert head["Metadata"] == {"team": "core"}
    assert head["ContentLength"] == len("hello from the cli\n")
    server.cli("s3api", "put-object", "--bucket", "cli-bucket", "--key", "signed.json.gz",
               "--body", str(local), "--metadata", "signature=00ff,signature-algorithm=SHA256withRSA")
    head = json.loads(server.cli("s3api", "head-object", "--bucket", "cli-bucket", "--key", "signed.json.gz").stdout)
    assert head["Metadata"] == {"signature": "00ff", "signature-algorithm": "SHA256withRSA"}

    missing = server.cli("s3api", "get-object", "--bucket", "cli-bucket", "--key", "nope",
                         os.path.join(tmp_path, "nope"), check=False)
    assert missing.returncode != 0 and "NoSuchKey" in missing.stderr

    server.cli("s3", "rm", "s3://cli-bucket", "--recursive")
    assert server.cli("s3", "rb", "s3://cli-bucket").returncode == 0
    assert "cli-bucket" not in server.cli("s3", "ls").stdout
