//! `GET /v1/export?format=jsonl|csv[&fleet_id=...][&status=...]`: every retained player
//! session, streamed in the form import accepts ([`crate::import::records`]). JSONL also
//! carries each game session, on the line before its player sessions; CSV holds player sessions
//! only. Rows are produced on a blocking thread, one game session at a time (each copied
//! atomically under its lock), and sent in 64 KiB chunks through a bounded channel, so memory
//! does not grow with the export and a slow client only slows its own export.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use super::{recovering, AdminState};
use crate::{
    domain::{FleetId, PlayerSessionStatus},
    import::records::{self, Format},
    store::Store,
};

/// Bytes per chunk sent to the client.
const CHUNK: usize = 64 << 10;

#[derive(Debug, serde::Deserialize)]
pub(super) struct ExportQuery {
    format: Option<String>,
    fleet_id: Option<String>,
    status: Option<String>,
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

pub(super) async fn export(State(s): State<AdminState>, Query(q): Query<ExportQuery>) -> Response {
    let Some((store, _)) = s.serving.get() else {
        return recovering();
    };
    let format = match q.format.as_deref().map(Format::parse) {
        Some(Some(f)) => f,
        _ => return bad_request("format: must be jsonl or csv".into()),
    };
    let fleet = match q.fleet_id.as_deref().filter(|f| !f.is_empty()) {
        None => None,
        Some(f) => match FleetId::parse("fleet_id", f) {
            Ok(f) => Some(f),
            Err(e) => return bad_request(e.to_string()),
        },
    };
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match PlayerSessionStatus::parse(s) {
            Some(st) => Some(st),
            None => {
                return bad_request(format!(
                    "status: {s:?} is not RESERVED, ACTIVE, COMPLETED or TIMEDOUT"
                ))
            }
        },
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let store = store.clone();
    tokio::task::spawn_blocking(move || produce(&store, format, fleet, status, &tx));
    let (content_type, name) = match format {
        Format::Jsonl => ("application/x-ndjson", "session-broker-export.jsonl"),
        Format::Csv => ("text/csv; charset=utf-8", "session-broker-export.csv"),
    };
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

/// Buffers bytes and sends them to the client in chunks; a write fails once the client is gone.
struct ChunkWriter<'a> {
    buf: Vec<u8>,
    tx: &'a tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl ChunkWriter<'_> {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK * 2),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }
}

impl std::io::Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Writes the export into `tx`; stops early when the client went away.
fn produce(
    store: &Arc<Store>,
    format: Format,
    fleet: Option<FleetId>,
    status: Option<PlayerSessionStatus>,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    use std::io::Write;
    let out = ChunkWriter {
        buf: Vec::with_capacity(CHUNK * 2),
        tx,
    };
    enum Output<'a> {
        Jsonl(ChunkWriter<'a>),
        Csv(Box<csv::Writer<ChunkWriter<'a>>>),
    }
    let result = (|| -> std::io::Result<()> {
        let mut out = match format {
            Format::Jsonl => Output::Jsonl(out),
            Format::Csv => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record(records::CSV_HEADER)?;
                Output::Csv(Box::new(w))
            }
        };
        let mut ids = store.game_session_ids();
        ids.sort();
        for id in ids {
            let Some((g, players)) = store.export_game_session(&id) else {
                continue;
            };
            if fleet.as_ref().is_some_and(|f| f != g.fleet_id()) {
                continue;
            }
            let players = players
                .iter()
                .filter(|p| status.is_none_or(|s| p.status == s));
            match &mut out {
                Output::Csv(w) => {
                    for p in players {
                        w.write_record(records::player_session_csv(p))?;
                    }
                }
                Output::Jsonl(w) => {
                    writeln!(w, "{}", records::game_session_json(&g))?;
                    for p in players {
                        writeln!(w, "{}", records::player_session_json(p))?;
                    }
                }
            }
        }
        match out {
            Output::Csv(mut w) => w.flush(),
            Output::Jsonl(mut w) => w.flush(),
        }
    })();
    if let Err(e) = result {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = tx.blocking_send(Err(e));
        }
    }
}
