//! The journal's read path: frames (length + CRC32C), checkpoints (protobuf) and operation
//! records back into domain changes, as recovery reads a segment.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use session_broker::{
    domain::{FleetId, GameSessionInfo},
    journal::{frame, records},
    storage::Checkpoint,
};

fn decode_all(mut buf: &[u8]) {
    let fleet = FleetId::parse("fleet_id", "fuzz").expect("valid");
    loop {
        match frame::next(buf) {
            frame::Next::Frame { body, len } => {
                if let Ok(cp) = Checkpoint::decode(body) {
                    for rec in &cp.records {
                        let _ = records::decode(rec, |g| {
                            Some(Arc::new(GameSessionInfo {
                                id: g.clone(),
                                fleet_id: fleet.clone(),
                                ip_address: "10.0.0.1".into(),
                                port: 7777,
                            }))
                        });
                    }
                }
                buf = &buf[len..];
            }
            _ => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Raw bytes as a segment, and the same bytes as one framed checkpoint body (so the
    // protobuf and record decoders see inputs with a valid CRC).
    decode_all(data);
    let mut framed = Vec::new();
    frame::put(&mut framed, data);
    decode_all(&framed);
});
