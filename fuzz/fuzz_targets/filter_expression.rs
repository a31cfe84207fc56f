//! SearchGameSessions' filter and sort expressions: any text parses or is INVALID_ARGUMENT.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_broker::domain::{Filter, Sort};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Filter::parse("filter_expression", text);
        let _ = Sort::parse("sort_expression", text);
    }
});
