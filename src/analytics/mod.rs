//! Analytics: lifecycle events for an upstream sink in Segment's format.
//!
//! Built so far: [`events`] (the track message of each journaled transition, with stable
//! messageIds), [`batcher`] (batches within Segment's byte and count limits) and [`sink`]
//! (Segment's HTTP API, a JSON-lines file, none; status classification, Retry-After, full-jitter
//! backoff). The dispatcher that reads the journal from its cursor ([`crate::journal::reader`])
//! and checkpoints the cursor is not wired yet: the daemon sends no analytics.

pub mod batcher;
pub mod events;
pub mod sink;
