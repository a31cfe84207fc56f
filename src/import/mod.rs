//! Bulk import and export of player sessions (JSONL and CSV).
//!
//! Built so far: [`records`], the file formats both ways (JSONL with the API's snake_case names,
//! GameLift's own PascalCase `PlayerSession` JSON, CSV with a header row), validated with the
//! API's rules, and the export form of game and player sessions. The resumable import jobs and
//! the admin HTTP endpoints are not wired yet.

pub mod records;
