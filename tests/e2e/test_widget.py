"""GetMetricWidgetImage end to end: PNG answers in CBOR, JSON and query,
the raw `image/png` query answer, the aws CLI, and invalid widgets."""
import base64
import datetime
import json
import struct
import urllib.error
import urllib.parse
import urllib.request

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, REGION, SECRET_KEY

CLOUDWATCH_PROTOCOLS = ["smithy-rpc-v2-cbor", "json", "query"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def ihdr_size(png):
    """(width, height) from the IHDR chunk, which must follow the signature."""
    assert png[:8] == PNG_SIGNATURE, png[:16]
    length, kind = struct.unpack(">I4s", png[8:16])
    assert (length, kind) == (13, b"IHDR")
    return struct.unpack(">II", png[16:24])


def minute_ago(minutes):
    now = datetime.datetime.now(datetime.timezone.utc).replace(second=0, microsecond=0)
    return now - datetime.timedelta(minutes=minutes)


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def put_latency(cw, t0):
    cw.put_metric_data(Namespace="App/Widget", MetricData=[
        {"MetricName": "Latency", "Dimensions": [{"Name": "Svc", "Value": svc}],
         "Value": float(v), "Timestamp": t0 + datetime.timedelta(minutes=m)}
        for svc, scale in [("a", 1), ("b", 3)]
        for m, v in [(m, (m % 7) * 10 * scale + 5) for m in range(0, 40)]
    ])


def widget_json(t0, metric_name, width, height, **extra):
    """A fixed time range and fixed labels, so two images differ only by their data."""
    widget = {
        "metrics": [
            ["App/Widget", metric_name, "Svc", "a", {"label": "svc a"}],
            ["...", "b", {"label": "svc b", "color": "#2ca02c"}],
        ],
        "start": iso(t0 - datetime.timedelta(minutes=5)),
        "end": iso(t0 + datetime.timedelta(minutes=45)),
        "period": 60,
        "stat": "Maximum",
        "width": width,
        "height": height,
        "title": "Latency by service",
        "annotations": {"horizontal": [{"value": 100, "label": "SLO"}]},
    }
    widget.update(extra)
    return json.dumps(widget)


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_widget_image_is_a_png_of_the_requested_size_showing_the_data(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)
    t0 = minute_ago(50)
    put_latency(cw, t0)

    with_data = cw.get_metric_widget_image(MetricWidget=widget_json(t0, "Latency", 420, 260))["MetricWidgetImage"]
    assert isinstance(with_data, bytes)
    assert ihdr_size(with_data) == (420, 260)
    # Rendering is deterministic, so a difference below is the data's doing.
    again = cw.get_metric_widget_image(MetricWidget=widget_json(t0, "Latency", 420, 260), OutputFormat="png")
    assert again["MetricWidgetImage"] == with_data
    without_data = cw.get_metric_widget_image(MetricWidget=widget_json(t0, "NoSuchMetric", 420, 260))["MetricWidgetImage"]
    assert ihdr_size(without_data) == (420, 260)
    assert without_data != with_data

    for view in ["bar", "pie"]:
        png = cw.get_metric_widget_image(MetricWidget=widget_json(t0, "Latency", 300, 200, view=view))["MetricWidgetImage"]
        assert ihdr_size(png) == (300, 200)
        empty = cw.get_metric_widget_image(MetricWidget=widget_json(t0, "NoSuchMetric", 300, 200, view=view))
        assert empty["MetricWidgetImage"] != png, view

    # Defaults: 600x400 over the last three hours. `image/png` asks for a raw
    # PNG body only over query (tested below); JSON and CBOR treat it as png.
    options = {} if protocol == "query" else {"OutputFormat": "image/png"}
    default = cw.get_metric_widget_image(MetricWidget=json.dumps({"metrics": [["App/Widget", "Latency", "Svc", "a"]]}), **options)
    assert ihdr_size(default["MetricWidgetImage"]) == (600, 400)


@pytest.mark.parametrize("protocol", CLOUDWATCH_PROTOCOLS)
def test_invalid_widgets_are_invalid_parameter_values(server, protocol):
    cw = server.client("cloudwatch", protocol=protocol)

    def failure(widget, **kwargs):
        with pytest.raises(ClientError) as info:
            cw.get_metric_widget_image(MetricWidget=widget, **kwargs)
        return info.value.response

    for widget in [
        "{not json",
        "[]",
        json.dumps({"metrics": [["App", "Latency"]], "width": 2001}),
        json.dumps({"metrics": [["App", "Latency"]], "view": "gauge"}),
        json.dumps({"metrics": [["App", 7]]}),
        json.dumps({"metrics": [[".", "Latency"]]}),
        json.dumps({"metrics": [["App", "Latency"]], "start": "last tuesday"}),
    ]:
        response = failure(widget)
        assert response["Error"]["Code"] == "InvalidParameterValue", (widget, response["Error"])
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert failure("{not json")["Error"]["Message"] == "The field MetricWidget must be a valid JSON object."
    assert "/width" in failure(json.dumps({"metrics": [["App", "Latency"]], "width": 0}))["Error"]["Message"]
    response = failure(json.dumps({"metrics": [["App", "Latency"]]}), OutputFormat="gif")
    assert response["Error"]["Code"] == "InvalidParameterValue"


def signed_query(server, params):
    body = urllib.parse.urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    request = botocore.awsrequest.AWSRequest(method="POST", url=server.endpoint + "/", data=body, headers=headers)
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), "monitoring", REGION).add_auth(request)
    prepared = request.prepare()
    raw = urllib.request.Request(prepared.url, data=body, method="POST", headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(raw, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_query_image_png_answers_the_png_itself(server):
    widget = json.dumps({"metrics": [["App/Widget", "Latency"]], "width": 321, "height": 123})
    base = {"Action": "GetMetricWidgetImage", "Version": "2010-08-01", "MetricWidget": widget}
    status, headers, body = signed_query(server, {**base, "OutputFormat": "image/png"})
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert ihdr_size(body) == (321, 123)
    # The default `png` wraps the same image as base64 in the XML result.
    status, headers, xml = signed_query(server, base)
    assert status == 200 and headers["Content-Type"].startswith("text/xml")
    text = xml.decode()
    start = text.index("<MetricWidgetImage>") + len("<MetricWidgetImage>")
    png = base64.b64decode(text[start:text.index("</MetricWidgetImage>")])
    assert "<GetMetricWidgetImageResult>" in text
    assert ihdr_size(png) == (321, 123)


def test_aws_cli_writes_a_base64_png(server):
    t0 = minute_ago(50)
    put_latency(server.client("cloudwatch"), t0)
    widget = widget_json(t0, "Latency", 500, 300)
    out = server.cli("cloudwatch", "get-metric-widget-image", "--metric-widget", widget,
                     "--query", "MetricWidgetImage")
    png = base64.b64decode(json.loads(out.stdout))
    assert ihdr_size(png) == (500, 300)
