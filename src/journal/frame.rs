//! Framing: every frame is `[u32 length][u32 crc32c(body)][body]`, little-endian. A frame is the
//! unit of atomicity: a torn or corrupt frame is dropped whole. Bodies are never empty, so an
//! all-zero header is not a frame: it is the preallocated, not yet written part of a segment.

/// Bytes before the body.
pub const HEADER: usize = 8;
/// Upper bound of one frame body (sanity check against a corrupt length).
pub const MAX_BODY: usize = 256 << 20;

/// Appends one frame holding `body` to `out`.
pub fn put(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// Appends a frame whose body is produced by `write` (no intermediate copy).
pub fn put_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    write(out);
    let body_len = out.len() - start - HEADER;
    let crc = crc32c::crc32c(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What is at some offset of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A whole, valid frame; `len` is its total size.
    Frame { body: &'a [u8], len: usize },
    /// The buffer ends exactly here.
    End,
    /// An all-zero header: preallocated space that holds no frame (yet).
    Zeros,
    /// Fewer bytes than a header or than the header's length claims: a torn write.
    Truncated,
    /// A header with an impossible length or a CRC mismatch.
    Corrupt(&'static str),
}

/// The body length the header at the start of `buf` claims (`None`: fewer than 4 bytes).
pub fn claimed_len(buf: &[u8]) -> Option<usize> {
    let l = buf.get(..4)?;
    Some(u32::from_le_bytes(l.try_into().expect("4 bytes")) as usize)
}

/// Reads the frame at the start of `buf`.
pub fn next(buf: &[u8]) -> Next<'_> {
    if buf.is_empty() {
        return Next::End;
    }
    if buf.len() < HEADER {
        return Next::Truncated;
    }
    let len = claimed_len(buf).expect("a whole header");
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len == 0 && crc == 0 {
        return Next::Zeros;
    }
    if len > MAX_BODY {
        return Next::Corrupt("impossible frame length");
    }
    if buf.len() < HEADER + len {
        return Next::Truncated;
    }
    let body = &buf[HEADER..HEADER + len];
    if crc32c::crc32c(body) != crc {
        return Next::Corrupt("checksum mismatch");
    }
    Next::Frame {
        body,
        len: HEADER + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        put(&mut buf, b"hello");
        put_with(&mut buf, |b| b.extend_from_slice(b"world!"));
        let Next::Frame { body, len } = next(&buf) else {
            panic!()
        };
        assert_eq!(body, b"hello");
        let Next::Frame { body, .. } = next(&buf[len..]) else {
            panic!()
        };
        assert_eq!(body, b"world!");
        assert_eq!(next(&buf[buf.len()..]), Next::End);
        buf.extend_from_slice(&[0; 64]);
        assert_eq!(next(&buf[buf.len() - 64..]), Next::Zeros);
    }

    #[test]
    fn every_truncation_is_detected() {
        let mut buf = Vec::new();
        put(&mut buf, b"some record bytes");
        for cut in 1..buf.len() {
            assert_eq!(next(&buf[..cut]), Next::Truncated, "cut at {cut}");
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let mut buf = Vec::new();
        put(&mut buf, b"some record bytes");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(
                    !matches!(next(&b), Next::Frame { body, .. } if body == b"some record bytes"),
                    "flip {byte}:{bit} undetected"
                );
            }
        }
    }
}
