//! Import figures (`cargo bench --bench import`): prints, does not assert.
//!
//! A JSONL file of `SB_BENCH_ROWS` (1,000,000) player sessions in game sessions of 1,000 seats
//! (one game session line before each 1,000 players; a quarter RESERVED, a quarter ACTIVE, the
//! rest COMPLETED), imported into a fresh daemon with a `sync` journal through
//! `POST /v1/import`. Prints records/s from the job's start to its end, and the daemon's RSS.

mod common;

use std::{io::Write, time::Instant};

use serde_json::Value;
use session_broker::journal::JournalConfig;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let rows: usize = std::env::var("SB_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for i in 0..rows {
            if i % 1000 == 0 {
                writeln!(f, r#"{{"kind":"game_session","game_session_id":"g{}","fleet_id":"bench","maximum_player_session_count":1000,"release":"1.4.2"}}"#, i / 1000).unwrap();
            }
            let status = ["RESERVED", "ACTIVE", "COMPLETED", "COMPLETED"][i % 4];
            writeln!(f, r#"{{"kind":"player_session","player_id":"player-{i}","game_session_id":"g{}","status":"{status}","player_data":"{}","creation_time":"2026-12-01T10:00:00Z"}}"#, i / 1000, "x".repeat(64)).unwrap();
        }
        drop(f);
        let size = std::fs::metadata(&path).unwrap().len();
        let records = rows + rows.div_ceil(1000);
        let mut jc = JournalConfig::new(dir.path().join("data"));
        if let Ok(n) = std::env::var("SB_BENCH_SNAPSHOT_EVERY") { jc.snapshot_every_records = n.parse().unwrap(); }
        let mut config = common::config(Some(jc));
        config.store.reservation_timeout = std::time::Duration::from_secs(86_400);
        let shutdown = CancellationToken::new();
        let daemon = session_broker::start(config, shutdown.clone()).await.unwrap();
        let admin = daemon.admin_addr();
        let before = common::rss();
        let file = tokio::fs::File::open(&path).await.unwrap();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 << 10));
        let uploaded = Instant::now();
        let r = reqwest::Client::new()
            .post(format!("http://{admin}/v1/import?format=jsonl"))
            .body(body)
            .send()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let job = v["job_id"].as_str().unwrap().to_string();
        let started = Instant::now();
        let upload_secs = (started - uploaded).as_secs_f64();
        let status = loop {
            let s: Value = serde_json::from_str(
                &reqwest::get(format!("http://{admin}/v1/import/{job}/status"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap(),
            )
            .unwrap();
            if s["status"] != "running" {
                break s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        let took = started.elapsed().as_secs_f64();
        println!(
            "import: {records} records ({} MiB of JSONL) in {took:.2}s = {:.0} records/s (upload {upload_secs:.2}s); imported {}, skipped {}; RSS +{} MiB ({:.0} bytes per session)",
            size >> 20,
            records as f64 / took,
            status["imported"],
            status["skipped"],
            common::rss().saturating_sub(before) >> 20,
            common::rss().saturating_sub(before) as f64 / rows as f64,
        );
        shutdown.cancel();
        daemon.wait().await.unwrap();
    });
}
