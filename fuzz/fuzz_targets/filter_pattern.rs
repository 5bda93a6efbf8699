//! Fuzzes the filter pattern engine (`spec/logs.md` §6): parsing any text,
//! and matching and extracting against any event, never panics or hangs.
//! Input: the pattern, a newline, then the event message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailwatch_core::logs::pattern::Pattern;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, message) = text
        .split_once('\n')
        .unwrap_or((&text, r#"a b [c d] "e f" {"g": [1, {"h": null}]}"#));
    if let Ok(p) = Pattern::parse(pattern) {
        let _ = p.matches(message);
        let _ = p.extracted_values(message);
    }
});
