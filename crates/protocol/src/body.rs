//! Request body pipeline after hashing: content decoding (gzip, with a cap
//! against decompression bombs) and protocol decoding into the input [`Value`].

use std::io::Read;

use crate::classify::Route;
use crate::error::ApiError;
use crate::service::Protocol;
use crate::value::Value;
use crate::{cbor, json, query};

/// Largest decoded body accepted (spec §12.3 suggests about 10 MB).
pub const MAX_DECODED_BODY: usize = 10 * 1024 * 1024;

/// Decodes `Content-Encoding` (identity or gzip). Unknown codings are refused.
pub fn decode_content(content_encoding: Option<&str>, raw: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut codings = content_encoding
        .unwrap_or_default()
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .peekable();
    if codings.peek().is_none() {
        return Ok(raw.to_vec());
    }
    let mut body = raw.to_vec();
    for coding in codings {
        if coding != "gzip" && coding != "x-gzip" {
            return Err(ApiError::new(
                "SerializationException",
                400,
                format!("Unsupported Content-Encoding {coding}"),
            )
            .with_query_code("InvalidParameterValue"));
        }
        let mut out = Vec::new();
        let mut reader =
            flate2::read::MultiGzDecoder::new(&body[..]).take(MAX_DECODED_BODY as u64 + 1);
        reader
            .read_to_end(&mut out)
            .map_err(|e| ApiError::malformed(format!("Could not decompress the gzip body: {e}")))?;
        if out.len() > MAX_DECODED_BODY {
            return Err(too_large());
        }
        body = out;
    }
    Ok(body)
}

/// 413 for bodies over the limit.
pub fn too_large() -> ApiError {
    ApiError::new(
        "RequestEntityTooLargeException",
        413,
        "Request body is too large",
    )
    .with_query_code("RequestEntityTooLarge")
}

/// Decodes the (content-decoded) body into the operation's input tree.
pub fn decode_input(route: &Route, body: &[u8]) -> Result<Value, ApiError> {
    match route.protocol {
        Protocol::AwsJson1_0 | Protocol::AwsJson1_1 => {
            json::decode(body).map_err(|e| ApiError::malformed(e.to_string()))
        }
        Protocol::RpcV2Cbor => cbor::decode(body)
            .map_err(|e| ApiError::malformed(e.to_string()).with_query_code("MalformedInput")),
        Protocol::AwsQuery => Ok(query::unflatten(&route.params)),
        // S3 handlers read the request themselves; the tree holds the query.
        Protocol::RestXml => Ok(query::unflatten(&route.params)),
        Protocol::RestJson1 => {
            // Members bound to the query string join the body members.
            let mut input = json::decode(body).map_err(|e| ApiError::malformed(e.to_string()))?;
            if let Value::Struct(members) = &mut input {
                for (k, v) in &route.params {
                    if !k.starts_with("X-Amz-") {
                        members.push((k.clone(), Value::String(v.clone())));
                    }
                }
            }
            Ok(input)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_and_caps() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"{\"a\":1}").unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(decode_content(Some("gzip"), &gz).unwrap(), b"{\"a\":1}");
        assert_eq!(decode_content(None, b"x").unwrap(), b"x");
        assert_eq!(decode_content(Some("br"), b"x").unwrap_err().status, 400);
        assert_eq!(
            decode_content(Some("gzip"), b"not gzip").unwrap_err().code,
            "SerializationException"
        );

        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; MAX_DECODED_BODY + 10]).unwrap();
        let bomb = enc.finish().unwrap();
        assert_eq!(decode_content(Some("gzip"), &bomb).unwrap_err().status, 413);
    }
}
