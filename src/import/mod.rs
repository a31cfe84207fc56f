//! Bulk import and export of player sessions (JSONL and CSV).
//!
//! - [`records`]: the file formats both ways (JSONL with the API's snake_case names, GameLift's
//!   own PascalCase `PlayerSession` JSON, CSV with a header row), validated with the API's
//!   rules, and the export form of game and player sessions.
//! - [`jobs`]: resumable import jobs, checkpointed per chunk in the journal.
//!
//! The admin port serves them (`POST /v1/import`, `GET /v1/import/{id}/status`, `GET
//! /v1/export`); see `docs/import.md`.

pub mod jobs;
pub mod records;
