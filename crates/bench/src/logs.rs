//! The log ingest workload: PutLogEvents batches of ~1 KB application log
//! lines (seeded, so every server gets the same bytes), as many per request as
//! the 1,048,576-byte batch limit allows with its 26 bytes per event.

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use trailwatch_types::Timestamp;

const WORDS: [&str; 16] = [
    "request", "user", "session", "cache", "miss", "hit", "db", "query", "latency", "retry",
    "upstream", "checkout", "cart", "item", "token", "region",
];

/// `bodies` PutLogEvents JSON bodies of `per_request` events of about 1 KB
/// into group `bench`, stream `s`, and the message bytes each carries.
pub(crate) fn put_bodies(per_request: usize, bodies: usize, end: Timestamp) -> (Vec<Bytes>, usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut out = Vec::with_capacity(bodies);
    let mut bytes = 0;
    for b in 0..bodies {
        let start = end.millis() - 60_000 + b as i64;
        let mut message_bytes = 0;
        let events: Vec<serde_json::Value> = (0..per_request)
            .map(|i| {
                let mut line = format!(
                    "{} INFO [req-{:08x}] status={} path=/api/v1/{}/{} latency_ms={}",
                    Timestamp::from_millis(start).to_iso8601(),
                    rng.gen::<u32>(),
                    [200, 200, 200, 404, 500][rng.gen_range(0..5)],
                    WORDS[rng.gen_range(0..WORDS.len())],
                    rng.gen_range(0..100_000),
                    rng.gen_range(1..2_000),
                );
                while line.len() < 1000 {
                    line.push(' ');
                    line.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
                    line.push('=');
                    line.push_str(&rng.gen_range(0..1_000_000).to_string());
                }
                line.truncate(1024);
                message_bytes += line.len();
                serde_json::json!({"timestamp": start + i as i64 / 100, "message": line})
            })
            .collect();
        bytes = message_bytes;
        let body =
            serde_json::json!({"logGroupName": "bench", "logStreamName": "s", "logEvents": events});
        out.push(Bytes::from(body.to_string()));
    }
    (out, bytes)
}
