//! Page tokens: any string a client sends is a token or INVALID_ARGUMENT.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_broker::store::page_token::{PageToken, SearchPageToken};

fuzz_target!(|data: &[u8]| {
    let (scope, token) = data.split_at(data.len().min(8));
    let token = String::from_utf8_lossy(token);
    let _ = PageToken::decode("page_token", &token, 7, scope);
    let _ = SearchPageToken::decode("page_token", &token, 7, scope);
});
