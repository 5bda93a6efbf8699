//! An HTTP client that holds each log batch at the door until the batch
//! before it has been answered.
//!
//! The SDK serializes and signs a request before handing it to its HTTP
//! client: for a 1 MiB PutLogEvents that is most of the agent's CPU (JSON
//! escaping and the SigV4 payload hash). The sender starts the next batch's
//! call while the current one is in flight, so that work overlaps the
//! server's; this client then keeps the request until the sender opens the
//! gate for its sequence number. The endpoint still sees one batch at a
//! time, in order, which the exactly-once header needs (trailwatch keeps the
//! newest sequence per agent and stream).

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tokio::sync::watch;

use crate::logs::BATCH_HEADER;

/// Wraps the SDK's default HTTPS client; `gate` holds the sequence number
/// of the one batch allowed through. Requests without the batch header
/// (CreateLogGroup, ...) pass at once.
#[derive(Debug, Clone)]
pub struct GatedClient {
    inner: SharedHttpClient,
    gate: watch::Receiver<u64>,
}

impl GatedClient {
    /// The SDK's default HTTPS stack (hyper 1, rustls with aws-lc), gated.
    pub fn new(gate: watch::Receiver<u64>) -> Self {
        let inner = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https();
        Self { inner, gate }
    }
}

impl HttpClient for GatedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(GatedConnector {
            inner: self.inner.http_connector(settings, components),
            gate: self.gate.clone(),
        })
    }
}

#[derive(Debug)]
struct GatedConnector {
    inner: SharedHttpConnector,
    gate: watch::Receiver<u64>,
}

impl HttpConnector for GatedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let seq = request
            .headers()
            .get(BATCH_HEADER)
            .and_then(|v| v.rsplit_once(':'))
            .and_then(|(_, n)| n.parse::<u64>().ok());
        let (inner, mut gate) = (self.inner.clone(), self.gate.clone());
        HttpConnectorFuture::new(async move {
            if let Some(seq) = seq {
                // A closed gate means the sender is gone: nothing is sent
                // out of its order.
                if gate.wait_for(|open| *open == seq).await.is_err() {
                    return Err(ConnectorError::other("the log sender stopped".into(), None));
                }
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Answers 200 at once and records the batch header of each call.
    #[derive(Debug)]
    struct Recorder(Arc<Mutex<Vec<Option<String>>>>);

    impl HttpConnector for Recorder {
        fn call(&self, mut request: HttpRequest) -> HttpConnectorFuture {
            let batch = request.headers().get(BATCH_HEADER).map(str::to_owned);
            self.0.lock().unwrap().push(batch);
            let body = request.take_body();
            let status = StatusCode::try_from(200).unwrap();
            HttpConnectorFuture::ready(Ok(HttpResponse::new(status, body)))
        }
    }

    fn request(batch: Option<&str>) -> HttpRequest {
        let mut r = HttpRequest::empty();
        if let Some(b) = batch {
            r.headers_mut().insert(BATCH_HEADER, b.to_owned());
        }
        r
    }

    #[tokio::test]
    async fn a_batch_waits_for_its_turn_and_other_calls_pass() {
        let (open, gate) = watch::channel(1);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connector = GatedConnector {
            inner: SharedHttpConnector::new(Recorder(seen.clone())),
            gate,
        };
        connector.call(request(None)).await.unwrap();
        let second = tokio::spawn(connector.call(request(Some("a:2"))));
        connector.call(request(Some("a:1"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*seen.lock().unwrap(), vec![None, Some("a:1".to_owned())]);
        open.send_replace(2);
        second.await.unwrap().unwrap();
        assert_eq!(seen.lock().unwrap().last().unwrap().as_deref(), Some("a:2"));
        // The sender gone, a waiting batch is never sent.
        let third = connector.call(request(Some("a:3")));
        drop(open);
        assert!(third.await.is_err());
        assert_eq!(seen.lock().unwrap().len(), 3);
    }
}
