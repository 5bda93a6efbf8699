//! Which operations are read-only and which are data events
//! (`spec/cloudtrail.md` §1.5 and §8, trailwatch's normative table).

/// `eventCategory` of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventCategory {
    /// Control-plane calls; visible in LookupEvents.
    Management,
    /// High-volume data-plane calls; reach only trails that select them.
    Data,
    /// CloudTrail Insights events.
    Insight,
    /// External audit events ingested through a Lake channel (`ActivityAuditLog`).
    Activity,
}

impl EventCategory {
    /// Whether LookupEvents indexes events of this category (management and
    /// Insights); the others are only stored.
    pub fn indexed(self) -> bool {
        matches!(self, EventCategory::Management | EventCategory::Insight)
    }

    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventCategory::Management => "Management",
            EventCategory::Data => "Data",
            EventCategory::Insight => "Insight",
            EventCategory::Activity => "ActivityAuditLog",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Management" => Some(EventCategory::Management),
            "Data" => Some(EventCategory::Data),
            "Insight" => Some(EventCategory::Insight),
            "ActivityAuditLog" => Some(EventCategory::Activity),
            _ => None,
        }
    }
}

/// Static classification of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationClass {
    /// `readOnly` of the record.
    pub read_only: bool,
    /// `eventCategory` of the record.
    pub category: EventCategory,
}

/// Classifies `operation` of the service with SigV4 signing name `service`.
pub fn classify_operation(service: &str, operation: &str) -> OperationClass {
    let data_read: &[&str] = match service {
        "monitoring" => &[
            "GetMetricData",
            "GetMetricStatistics",
            "GetMetricWidgetImage",
            "ListMetrics",
        ],
        "logs" => &[
            "GetLogEvents",
            "FilterLogEvents",
            "StartLiveTail",
            "GetLogRecord",
        ],
        // Object-level calls; bucket-level ones (ListObjects included, as at
        // AWS) stay management events.
        "s3" => &["GetObject", "HeadObject"],
        _ => &[],
    };
    let data_write: &[&str] = match service {
        "monitoring" => &["PutMetricData"],
        "logs" => &["PutLogEvents"],
        "cloudtrail-data" => &["PutAuditEvents"],
        "s3" => &["PutObject", "DeleteObject"],
        _ => &[],
    };
    if data_read.contains(&operation) {
        return OperationClass {
            read_only: true,
            category: EventCategory::Data,
        };
    }
    if data_write.contains(&operation) {
        return OperationClass {
            read_only: false,
            category: EventCategory::Data,
        };
    }
    // Logs Insights queries read; CloudTrail Lake's StartQuery is listed as a write.
    let read_only_exception =
        service == "logs" && matches!(operation, "StartQuery" | "GetQueryResults");
    // `Head` for S3's HeadBucket.
    let read_only = read_only_exception
        || [
            "Describe", "Get", "List", "Lookup", "Test", "Filter", "Head",
        ]
        .iter()
        .any(|p| operation.starts_with(p));
    OperationClass {
        read_only,
        category: EventCategory::Management,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows() {
        let m = |read_only| OperationClass {
            read_only,
            category: EventCategory::Management,
        };
        let d = |read_only| OperationClass {
            read_only,
            category: EventCategory::Data,
        };
        assert_eq!(classify_operation("monitoring", "PutMetricData"), d(false));
        assert_eq!(classify_operation("monitoring", "ListMetrics"), d(true));
        assert_eq!(classify_operation("monitoring", "DescribeAlarms"), m(true));
        assert_eq!(classify_operation("monitoring", "PutMetricAlarm"), m(false));
        assert_eq!(classify_operation("logs", "PutLogEvents"), d(false));
        assert_eq!(classify_operation("logs", "FilterLogEvents"), d(true));
        assert_eq!(classify_operation("logs", "StartQuery"), m(true));
        assert_eq!(classify_operation("logs", "StopQuery"), m(false));
        assert_eq!(classify_operation("cloudtrail", "StartQuery"), m(false));
        assert_eq!(classify_operation("cloudtrail", "LookupEvents"), m(true));
        assert_eq!(
            classify_operation("cloudtrail-data", "PutAuditEvents"),
            d(false)
        );
        assert_eq!(classify_operation("sts", "GetCallerIdentity"), m(true));
        assert_eq!(classify_operation("s3", "GetObject"), d(true));
        assert_eq!(classify_operation("s3", "HeadObject"), d(true));
        assert_eq!(classify_operation("s3", "PutObject"), d(false));
        assert_eq!(classify_operation("s3", "DeleteObject"), d(false));
        assert_eq!(classify_operation("s3", "ListObjects"), m(true));
        assert_eq!(classify_operation("s3", "ListObjectsV2"), m(true));
        assert_eq!(classify_operation("s3", "ListBuckets"), m(true));
        assert_eq!(classify_operation("s3", "GetBucketLocation"), m(true));
        assert_eq!(classify_operation("s3", "HeadBucket"), m(true));
        assert_eq!(classify_operation("s3", "CreateBucket"), m(false));
        assert_eq!(classify_operation("s3", "DeleteBucket"), m(false));
    }
}
