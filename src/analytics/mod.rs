//! Analytics: lifecycle events for an upstream sink in Segment's format.
//!
//! Built so far: [`events`] (the track message of each journaled transition, with stable
//! messageIds) and [`batcher`] (batches within Segment's byte and count limits). The dispatcher
//! that reads the journal from its cursor ([`crate::journal::reader`]), the sinks and the cursor
//! checkpoints are not wired yet: the daemon sends no analytics.

pub mod batcher;
pub mod events;
