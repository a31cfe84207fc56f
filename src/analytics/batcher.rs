//! Batching on real serialized bytes, within Segment's limits: at most 32,000 bytes per
//! message, 2,500 messages and 500,000 bytes per request body, envelope included. A message too
//! large on its own is refused (the caller counts and logs it), never poisoning a batch.

/// Segment's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Bytes of one request body, envelope included.
    pub max_body: usize,
    /// Bytes of one serialized message.
    pub max_message: usize,
    /// Messages per request.
    pub max_messages: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_body: 500_000,
            max_message: 32_000,
            max_messages: 2_500,
        }
    }
}

/// `{"batch":[` ... `],"sentAt":"2026-11-23T03:00:00.000Z"}`: the bytes around the messages.
const HEAD: &str = r#"{"batch":["#;
const TAIL_BEFORE_TIME: &str = r#"],"sentAt":""#;
const TAIL_AFTER_TIME: &str = r#""}"#;
/// `sentAt` is RFC 3339 with milliseconds in UTC: always 24 bytes.
pub const SENT_AT_LEN: usize = 24;

/// The body bytes of a batch of `messages` messages totalling `bytes`.
pub fn body_len(messages: usize, bytes: usize) -> usize {
    HEAD.len()
        + bytes
        + messages.saturating_sub(1)
        + TAIL_BEFORE_TIME.len()
        + SENT_AT_LEN
        + TAIL_AFTER_TIME.len()
}

/// A message refused because it alone exceeds the per-message limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    pub bytes: usize,
    pub limit: usize,
}

/// Accumulates serialized messages into batches that respect the limits.
#[derive(Debug, Default)]
pub struct Batcher {
    limits: BatchLimits,
    messages: Vec<String>,
    bytes: usize,
}

impl Batcher {
    pub fn new(limits: BatchLimits) -> Self {
        Batcher {
            limits,
            messages: Vec::new(),
            bytes: 0,
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Adds one serialized message. If it does not fit in the current batch, that batch is
    /// returned (complete) and the message starts the next one.
    pub fn push(&mut self, message: String) -> Result<Option<Vec<String>>, TooLarge> {
        let n = message.len();
        if n > self.limits.max_message || body_len(1, n) > self.limits.max_body {
            return Err(TooLarge {
                bytes: n,
                limit: self.limits.max_message,
            });
        }
        let fits = self.messages.len() < self.limits.max_messages
            && body_len(self.messages.len() + 1, self.bytes + n) <= self.limits.max_body;
        let full = if fits { None } else { self.take() };
        self.bytes += n;
        self.messages.push(message);
        Ok(full)
    }

    /// The waiting messages as a batch (`None` when empty: an empty buffer sends nothing).
    pub fn take(&mut self) -> Option<Vec<String>> {
        if self.messages.is_empty() {
            return None;
        }
        self.bytes = 0;
        Some(std::mem::take(&mut self.messages))
    }
}

/// The request body of `batch`, stamped with `sent_at` (24 bytes, RFC 3339 with milliseconds).
pub fn body(batch: &[String], sent_at: &str) -> String {
    let bytes: usize = batch.iter().map(String::len).sum();
    let mut out = String::with_capacity(body_len(batch.len(), bytes));
    out.push_str(HEAD);
    for (i, m) in batch.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(m);
    }
    out.push_str(TAIL_BEFORE_TIME);
    out.push_str(sent_at);
    out.push_str(TAIL_AFTER_TIME);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENT_AT: &str = "2026-11-23T03:00:00.000Z";

    fn msg(n: usize) -> String {
        // A JSON object of exactly n bytes.
        format!(r#"{{"x":"{}"}}"#, "a".repeat(n - 8))
    }

    #[test]
    fn bodies_are_valid_json_of_the_computed_size() {
        assert_eq!(SENT_AT.len(), SENT_AT_LEN);
        let batch = vec![msg(20), msg(30), msg(40)];
        let b = body(&batch, SENT_AT);
        assert_eq!(b.len(), body_len(3, 90));
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["batch"].as_array().unwrap().len(), 3);
        assert_eq!(v["sentAt"], SENT_AT);
    }

    #[test]
    fn no_batch_exceeds_a_limit() {
        let limits = BatchLimits::default();
        let mut b = Batcher::new(limits);
        let mut batches = Vec::new();
        // 20,000-byte messages: 24 fit in 500,000 bytes with the envelope, not 25.
        for _ in 0..100 {
            if let Some(full) = b.push(msg(20_000)).unwrap() {
                batches.push(full);
            }
        }
        batches.extend(b.take());
        assert!(b.take().is_none(), "an empty buffer sends nothing");
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 100);
        for batch in &batches {
            assert!(body(batch, SENT_AT).len() <= limits.max_body);
        }
        assert_eq!(batches[0].len(), 24);
        // Tiny messages: the count limit applies first.
        let mut b = Batcher::new(limits);
        let mut first = None;
        for _ in 0..3_000 {
            if let Some(full) = b.push(msg(10)).unwrap() {
                first.get_or_insert(full);
            }
        }
        assert_eq!(first.unwrap().len(), 2_500);
        assert_eq!(b.len(), 500);
    }

    #[test]
    fn an_oversize_message_is_refused_alone() {
        let mut b = Batcher::new(BatchLimits::default());
        b.push(msg(100)).unwrap();
        assert_eq!(
            b.push(msg(32_001)),
            Err(TooLarge {
                bytes: 32_001,
                limit: 32_000
            })
        );
        b.push(msg(32_000)).unwrap();
        assert_eq!(b.take().unwrap().len(), 2, "the batch is unharmed");
    }
}
