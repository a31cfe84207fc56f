//! The import parsers: JSONL lines (snake_case and GameLift PascalCase) and CSV rows (with the
//! first line as the header), as an import job reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_broker::import::records::{parse_jsonl, CsvColumns};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = parse_jsonl(line);
    }
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(data);
    let Ok(header) = r.headers().cloned() else {
        return;
    };
    let Ok(columns) = CsvColumns::from_header(&header) else {
        return;
    };
    for row in r.records().flatten() {
        let _ = columns.parse(&row);
    }
});
