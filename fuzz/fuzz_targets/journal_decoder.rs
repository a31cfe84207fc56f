//! The journal's read path: frames (length + CRC32C), checkpoints (protobuf) and operation
//! records back into domain changes, as recovery reads a segment: both the prost decoders and
//! the borrowed readers replay uses (`journal::protowire`), which must agree with them.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use session_broker::{
    domain::{FleetId, GameSessionId, GameSessionInfo, Lsn},
    journal::{frame, protowire, records},
    storage::Checkpoint,
};

fn decode_all(mut buf: &[u8]) {
    let fleet = FleetId::parse("fleet_id", "fuzz").expect("valid");
    let game = |g: &str| {
        Some(Arc::new(GameSessionInfo {
            id: GameSessionId::parse("game_session_id", g).ok()?,
            fleet_id: fleet.clone(),
            ip_address: "10.0.0.1".into(),
            port: 7777,
        }))
    };
    loop {
        match frame::next(buf) {
            frame::Next::Frame { body, len } => {
                let mut spans = Vec::new();
                let split = protowire::split_checkpoint(body, &mut spans);
                if let Ok(cp) = Checkpoint::decode(body) {
                    // What prost accepts, the replay reader splits the same way.
                    assert_eq!(split, Ok(cp.first_lsn));
                    assert_eq!(spans.len(), cp.records.len());
                    for (i, (rec, span)) in cp.records.iter().zip(&spans).enumerate() {
                        let lsn = cp.first_lsn.wrapping_add(i as Lsn);
                        let mut rec = rec.clone();
                        rec.lsn = lsn;
                        let slow = records::decode(&rec, game);
                        let fast = records::decode_bytes(&body[span.bytes.clone()], lsn, game);
                        assert_eq!(format!("{slow:?}"), format!("{fast:?}"));
                    }
                }
                for span in &spans {
                    let _ = records::decode_bytes(&body[span.bytes.clone()], 1, game);
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
