//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates the tonic
//! client and server code with tonic-prost-build. The encoded descriptor set is written to
//! `OUT_DIR/session_broker_descriptor.bin` for gRPC server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/session_broker/v1/types.proto",
    "proto/session_broker/v1/game_session_service.proto",
    "proto/session_broker/v1/player_session_service.proto",
    "proto/session_broker/v1/fleet_service.proto",
    "proto/session_broker/v1/session_health_service.proto",
    "proto/session_broker/v1/journal.proto",
    "proto/session_broker/storage/v1/storage.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    fs::write(
        out.join("session_broker_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    // The bench's echo baseline: generated too, but not part of the daemon's reflection set.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(protox::compile(
            ["proto/session_broker/bench/v1/echo.proto"],
            ["proto"],
        )?)?;
    Ok(())
}
