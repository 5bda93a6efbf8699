//! The one error type every protocol renders: AWS code, query code, status and
//! fault, message, and modelled extra members (`spec/protocols.md` §10).
//!
//! Domain crates never see this type; the server maps their typed errors into it.
//! AWS codes are spelled only here and in the server's per-service mapping.

use crate::service::{Protocol, Service};
use crate::value::Value;

/// Who is at fault, as awsQuery's `<Type>` and `x-amzn-query-error` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller (4xx).
    Sender,
    /// The service (5xx).
    Receiver,
}

impl Fault {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Sender => "Sender",
            Fault::Receiver => "Receiver",
        }
    }
}

/// An error answer, protocol-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// Error shape name (`InvalidParameterValueException`): JSON `__type`.
    pub code: String,
    /// awsQuery `<Code>` and the `x-amzn-query-error` code (`InvalidParameterValue`).
    pub query_code: String,
    /// HTTP status for JSON, CBOR and REST answers.
    pub status: u16,
    /// HTTP status for awsQuery answers (differs for some auth errors).
    pub query_status: u16,
    /// Sender or Receiver.
    pub fault: Fault,
    /// Human-readable message.
    pub message: String,
    /// Modelled members of the error shape, sent beside `message`.
    pub extra: Vec<(String, Value)>,
}

impl ApiError {
    /// An error whose query code equals its shape name and whose status is the
    /// same in every protocol.
    pub fn new(code: &str, status: u16, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            query_code: code.to_owned(),
            status,
            query_status: status,
            fault: if status >= 500 {
                Fault::Receiver
            } else {
                Fault::Sender
            },
            message: message.into(),
            extra: Vec::new(),
        }
    }

    /// Sets the awsQuery code (when it differs from the shape name).
    pub fn with_query_code(mut self, query_code: &str) -> Self {
        self.query_code = query_code.to_owned();
        self
    }

    /// Sets the awsQuery status (when it differs).
    pub fn with_query_status(mut self, status: u16) -> Self {
        self.query_status = status;
        self
    }

    /// Sets the fault explicitly (some modelled errors contradict their status).
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// The status sent in `protocol`.
    pub fn status_for(&self, protocol: Protocol) -> u16 {
        if protocol == Protocol::AwsQuery {
            self.query_status
        } else {
            self.status
        }
    }

    /// The code the client reports, which is what CloudTrail records as
    /// `errorCode`: the query code in awsQuery and for query-compatible services
    /// (clients read it from `x-amzn-query-error`), the shape name elsewhere.
    pub fn wire_code(&self, protocol: Protocol, service: Option<Service>) -> &str {
        let query_compatible = service.is_some_and(Service::is_query_compatible);
        if protocol == Protocol::AwsQuery || query_compatible {
            &self.query_code
        } else {
            &self.code
        }
    }

    /// 500 `InternalFailure` with a generic message; the cause is logged, not sent.
    pub fn internal(request_id: &str) -> Self {
        Self::new(
            "InternalFailure",
            500,
            format!("We encountered an internal error. Please try again. (request {request_id})"),
        )
    }

    /// 400 `SerializationException` / `MalformedQueryString` for bodies that do not decode.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new("SerializationException", 400, message).with_query_code("MalformedQueryString")
    }

    /// 501 `NotImplemented` for operations in the AWS model that trailwatch does not serve yet.
    pub fn not_implemented(operation: &str) -> Self {
        Self::new(
            "NotImplemented",
            501,
            format!("The operation {operation} is not implemented by trailwatch yet."),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiError {}
