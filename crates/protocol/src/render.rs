//! Response envelopes per protocol (`spec/protocols.md` §5.3–5.4, §6.3–6.4,
//! §7.4–7.5, §8, §12.1). The server adds `Date` and `Content-Length`.

use crate::error::ApiError;
use crate::service::{Protocol, Service};
use crate::value::Value;
use crate::{cbor, json, xml};

/// Status, headers and body of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// HTTP status.
    pub status: u16,
    /// Headers other than `Date` and `Content-Length`.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

fn base_headers(protocol: Protocol, request_id: &str) -> Vec<(String, String)> {
    if protocol == Protocol::RestXml {
        // S3 clients read the request id from this header only.
        return vec![("x-amz-request-id".to_owned(), request_id.to_owned())];
    }
    let mut headers = vec![("x-amzn-RequestId".to_owned(), request_id.to_owned())];
    if protocol == Protocol::RpcV2Cbor {
        headers.push(("smithy-protocol".to_owned(), "rpc-v2-cbor".to_owned()));
    }
    headers
}

fn content_type(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::AwsJson1_0 => "application/x-amz-json-1.0",
        Protocol::AwsJson1_1 => "application/x-amz-json-1.1",
        Protocol::RpcV2Cbor => "application/cbor",
        Protocol::AwsQuery => "text/xml",
        Protocol::RestJson1 => "application/json",
        Protocol::RestXml => "application/xml",
    }
}

/// A success answer. `output` is `None` for operations without an output shape.
pub fn success(
    protocol: Protocol,
    service: Service,
    operation: &str,
    output: Option<&Value>,
    request_id: &str,
) -> Rendered {
    let mut headers = base_headers(protocol, request_id);
    let body = match protocol {
        Protocol::AwsJson1_0 | Protocol::AwsJson1_1 | Protocol::RestJson1 => match output {
            Some(v) => json::encode(v),
            None => Vec::new(),
        },
        Protocol::RpcV2Cbor => match output {
            Some(v @ (Value::Struct(_) | Value::Map(_))) => cbor::encode(v),
            Some(_) => cbor::encode(&Value::empty_struct()),
            None => Vec::new(),
        },
        Protocol::AwsQuery => {
            let mut out = String::with_capacity(256);
            out.push_str(&format!(
                "<{operation}Response xmlns=\"{}\">",
                service.xml_namespace()
            ));
            if let Some(v) = output {
                xml::write_element(&mut out, &format!("{operation}Result"), v);
            }
            out.push_str("<ResponseMetadata><RequestId>");
            xml::escape_into(&mut out, request_id);
            out.push_str(&format!(
                "</RequestId></ResponseMetadata></{operation}Response>"
            ));
            out.into_bytes()
        }
        // S3 handlers write their own bodies ([`rest`]); this is only reached
        // for an answer without one.
        Protocol::RestXml => Vec::new(),
    };
    if !body.is_empty() || protocol != Protocol::RpcV2Cbor {
        headers.push(("Content-Type".to_owned(), content_type(protocol).to_owned()));
    }
    Rendered {
        status: 200,
        headers,
        body,
    }
}

/// A success answer whose body is `body` as is, under its own content type,
/// instead of the protocol's envelope: awsQuery's GetMetricWidgetImage with
/// `OutputFormat=image/png` answers the PNG itself.
pub fn raw(protocol: Protocol, content_type: &str, body: Vec<u8>, request_id: &str) -> Rendered {
    let mut headers = base_headers(protocol, request_id);
    headers.push(("Content-Type".to_owned(), content_type.to_owned()));
    Rendered {
        status: 200,
        headers,
        body,
    }
}

/// A REST answer whose status, headers and body the handler chose (S3), with
/// the protocol's request-id header added.
pub fn rest(
    protocol: Protocol,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    request_id: &str,
) -> Rendered {
    let mut all = base_headers(protocol, request_id);
    all.extend(headers);
    Rendered {
        status,
        headers: all,
        body,
    }
}

/// An error answer in the request's protocol.
pub fn error(
    protocol: Protocol,
    service: Option<Service>,
    err: &ApiError,
    request_id: &str,
) -> Rendered {
    let mut headers = base_headers(protocol, request_id);
    headers.push(("Content-Type".to_owned(), content_type(protocol).to_owned()));
    let status = err.status_for(protocol);
    let error_type = if protocol.uses_absolute_error_type() {
        let namespace = service.unwrap_or(Service::CloudWatch).shape_namespace();
        format!("{namespace}#{}", err.code)
    } else {
        err.code.clone()
    };
    let envelope = || {
        let mut members = vec![
            ("__type".to_owned(), Value::String(error_type.clone())),
            ("message".to_owned(), Value::String(err.message.clone())),
        ];
        members.extend(err.extra.iter().cloned());
        Value::Struct(members)
    };
    if matches!(protocol, Protocol::AwsJson1_0 | Protocol::RpcV2Cbor)
        && service.is_none_or(Service::is_query_compatible)
    {
        headers.push((
            "x-amzn-query-error".to_owned(),
            format!("{};{}", err.query_code, err.fault.as_str()),
        ));
    }
    let body = match protocol {
        Protocol::AwsJson1_0 | Protocol::AwsJson1_1 => json::encode(&envelope()),
        Protocol::RpcV2Cbor => cbor::encode(&envelope()),
        Protocol::RestJson1 => {
            headers.push(("X-Amzn-ErrorType".to_owned(), err.code.clone()));
            json::encode(&envelope())
        }
        Protocol::AwsQuery => {
            let namespace = service.unwrap_or(Service::CloudWatch).xml_namespace();
            let mut out = String::with_capacity(256);
            out.push_str(&format!(
                "<ErrorResponse xmlns=\"{namespace}\"><Error><Type>"
            ));
            out.push_str(err.fault.as_str());
            out.push_str("</Type><Code>");
            xml::escape_into(&mut out, &err.query_code);
            out.push_str("</Code><Message>");
            xml::escape_into(&mut out, &err.message);
            out.push_str("</Message>");
            for (name, v) in &err.extra {
                xml::write_element(&mut out, name, v);
            }
            out.push_str("</Error><RequestId>");
            xml::escape_into(&mut out, request_id);
            out.push_str("</RequestId></ErrorResponse>");
            out.into_bytes()
        }
        Protocol::RestXml => {
            // S3's envelope: no namespace, no fault type; modelled members
            // (BucketName, Key) between the message and the request id.
            let mut out = String::with_capacity(256);
            out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>");
            xml::escape_into(&mut out, &err.code);
            out.push_str("</Code><Message>");
            xml::escape_into(&mut out, &err.message);
            out.push_str("</Message>");
            for (name, v) in &err.extra {
                xml::write_element(&mut out, name, v);
            }
            out.push_str("<RequestId>");
            xml::escape_into(&mut out, request_id);
            out.push_str("</RequestId></Error>");
            out.into_bytes()
        }
    };
    Rendered {
        status,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Rendered, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn query_success_always_has_result_element() {
        let r = success(
            Protocol::AwsQuery,
            Service::Sns,
            "ListTopics",
            Some(&Value::empty_struct()),
            "rid",
        );
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "<ListTopicsResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><ListTopicsResult></ListTopicsResult>\
             <ResponseMetadata><RequestId>rid</RequestId></ResponseMetadata></ListTopicsResponse>"
        );
        let r = success(
            Protocol::AwsQuery,
            Service::CloudWatch,
            "PutMetricData",
            None,
            "rid",
        );
        assert!(!String::from_utf8(r.body).unwrap().contains("Result"));
    }

    #[test]
    fn s3_errors_and_rest_answers() {
        let mut err = ApiError::new("NoSuchKey", 404, "The specified key does not exist.");
        err.extra.push(("Key".to_owned(), Value::string("a<b")));
        let r = error(Protocol::RestXml, Some(Service::S3), &err, "rid");
        assert_eq!(r.status, 404);
        assert_eq!(header(&r, "x-amz-request-id"), Some("rid"));
        assert_eq!(header(&r, "content-type"), Some("application/xml"));
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>\
             <Message>The specified key does not exist.</Message><Key>a&lt;b</Key>\
             <RequestId>rid</RequestId></Error>"
        );
        let r = rest(
            Protocol::RestXml,
            204,
            vec![("ETag".to_owned(), "\"x\"".to_owned())],
            Vec::new(),
            "rid",
        );
        assert_eq!((r.status, header(&r, "etag")), (204, Some("\"x\"")));
        assert_eq!(header(&r, "x-amzn-requestid"), None);
    }

    #[test]
    fn raw_bodies_keep_their_bytes_and_content_type() {
        let png = b"\x89PNG\r\n\x1a\n".to_vec();
        let r = raw(Protocol::AwsQuery, "image/png", png.clone(), "rid");
        assert_eq!((r.status, &r.body), (200, &png));
        assert_eq!(header(&r, "content-type"), Some("image/png"));
        assert_eq!(header(&r, "x-amzn-requestid"), Some("rid"));
    }

    #[test]
    fn blobs_are_base64_in_xml_and_json_and_bytes_in_cbor() {
        let output = Value::structure([("MetricWidgetImage", Value::Blob(vec![0x89, b'P', 0]))]);
        let render = |p| {
            success(
                p,
                Service::CloudWatch,
                "GetMetricWidgetImage",
                Some(&output),
                "rid",
            )
            .body
        };
        let xml = String::from_utf8(render(Protocol::AwsQuery)).unwrap();
        assert!(xml.contains(
            "<GetMetricWidgetImageResult><MetricWidgetImage>iVAA</MetricWidgetImage></GetMetricWidgetImageResult>"
        ));
        let json: serde_json::Value =
            serde_json::from_slice(&render(Protocol::AwsJson1_0)).unwrap();
        assert_eq!(json["MetricWidgetImage"], "iVAA");
        let cbor = crate::cbor::decode(&render(Protocol::RpcV2Cbor)).unwrap();
        assert_eq!(
            cbor.get("MetricWidgetImage"),
            Some(&Value::Blob(vec![0x89, b'P', 0]))
        );
    }

    #[test]
    fn cbor_envelopes() {
        let r = success(
            Protocol::RpcV2Cbor,
            Service::CloudWatch,
            "PutMetricData",
            None,
            "rid",
        );
        assert!(r.body.is_empty());
        assert_eq!(header(&r, "content-type"), None);
        assert_eq!(header(&r, "smithy-protocol"), Some("rpc-v2-cbor"));
        let r = success(
            Protocol::RpcV2Cbor,
            Service::CloudWatch,
            "DescribeAlarms",
            Some(&Value::empty_struct()),
            "rid",
        );
        assert_eq!(r.body, vec![0xa0]);

        let err = ApiError::new("InvalidParameterValueException", 400, "bad")
            .with_query_code("InvalidParameterValue");
        let r = error(Protocol::RpcV2Cbor, Some(Service::CloudWatch), &err, "rid");
        assert_eq!(
            header(&r, "x-amzn-query-error"),
            Some("InvalidParameterValue;Sender")
        );
        let decoded = crate::cbor::decode(&r.body).unwrap();
        assert_eq!(
            decoded.get("__type").and_then(Value::as_str),
            Some("com.amazonaws.cloudwatch#InvalidParameterValueException")
        );
    }

    #[test]
    fn json_and_query_errors() {
        let err = ApiError::new(
            "ResourceNotFoundException",
            400,
            "The specified log group does not exist.",
        );
        let r = error(Protocol::AwsJson1_1, Some(Service::Logs), &err, "rid");
        assert_eq!(
            String::from_utf8(r.body.clone()).unwrap(),
            r#"{"__type":"ResourceNotFoundException","message":"The specified log group does not exist."}"#
        );
        assert_eq!(header(&r, "x-amzn-query-error"), None);
        let err = ApiError::new("NotFound", 404, "Topic does not exist");
        let r = error(Protocol::AwsQuery, Some(Service::Sns), &err, "rid");
        assert_eq!(r.status, 404);
        assert!(String::from_utf8(r.body)
            .unwrap()
            .contains("<Type>Sender</Type><Code>NotFound</Code>"));
    }
}
