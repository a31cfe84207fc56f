//! The servers a bench run loads when no `--target` is given: a fresh daemon (and the echo
//! baseline) started as child processes of this binary on loopback, like a real deployment
//! where client and server are separate processes. Plus a tiny HTTP/1.1 GET for the admin port.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{bench_proto::echo_service_client::EchoServiceClient, journal::Durability};

/// A server process this bench started; killed (and its data dir removed) when dropped.
pub(crate) struct OwnServer {
    child: Child,
    /// `http://127.0.0.1:port` of its gRPC listener.
    pub grpc: String,
    /// Its admin HTTP port (daemons only).
    pub admin: Option<SocketAddr>,
    dir: Option<PathBuf>,
}

/// A loopback port that is free now (the child binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `start` again (up to five times) when the child could not bind its port: a port found
/// free may be taken by another process before the child binds it.
async fn retry_if_port_taken<T, F, Fut>(mut start: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut attempts = 1;
    loop {
        match start().await {
            Err(e) if attempts < 5 && format!("{e:#}").contains("Address already in use") => {
                attempts += 1;
                tracing::debug!(error = %e, "port taken meanwhile; trying others");
            }
            r => return r,
        }
    }
}

/// This binary (or `other`, another build), with no `SESSION_BROKER_*` variables leaking from
/// the caller's environment.
fn this_binary(other: Option<&std::path::Path>) -> anyhow::Result<Command> {
    let exe = match other {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe().context("cannot find the session-broker binary")?,
    };
    let mut cmd = Command::new(exe);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SESSION_BROKER_") {
            cmd.env_remove(key);
        }
    }
    Ok(cmd)
}

impl OwnServer {
    /// Starts a daemon with a fresh data dir under `parent` and waits until it is ready
    /// (`/readyz` 200). With `secure`: TLS and an auth file; readiness is then a gRPC health
    /// check over TLS, and `grpc` an `https://localhost` URL. `binary`: another build to run
    /// instead of this one (`--versus-binary`).
    pub async fn daemon(
        parent: &std::path::Path,
        durability: Durability,
        extra: &[&str],
        secure: Option<&super::secure::Secure>,
        binary: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        retry_if_port_taken(|| Self::try_daemon(parent, durability, extra, secure, binary)).await
    }

    /// One attempt of [`Self::daemon`], on ports that were free a moment ago.
    async fn try_daemon(
        parent: &std::path::Path,
        durability: Durability,
        extra: &[&str],
        secure: Option<&super::secure::Secure>,
        binary: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let dir = parent.join(format!("session-broker-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let log = std::fs::File::create(dir.join("daemon.log"))?;
        let (grpc, admin) = (free_port()?, free_port()?);
        let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin));
        let child = this_binary(binary)?
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--admin-listen", &admin_addr.to_string()])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--durability", durability_flag(durability)])
            .args(["--log-level", "warn"])
            // Every bench connection comes from 127.0.0.1: --connections alone bounds them.
            .args(["--max-connections-per-address", "0"])
            .args(extra)
            .args(secure.map(|s| s.daemon_args()).unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| match binary {
                Some(path) => format!("start the daemon {}", path.display()),
                None => "start the daemon".into(),
            })?;
        let mut server = OwnServer {
            child,
            grpc: match secure {
                None => format!("http://127.0.0.1:{grpc}"),
                Some(_) => format!("https://localhost:{grpc}"),
            },
            admin: secure.is_none().then_some(admin_addr),
            dir: Some(dir),
        };
        match secure {
            None => {
                server
                    .wait_until(|| async move {
                        matches!(http_get(admin_addr, "/readyz").await, Ok((200, _)))
                    })
                    .await?
            }
            Some(s) => {
                let endpoint = s.credentials.endpoint(&server.grpc)?;
                server
                    .wait_until(|| {
                        let endpoint = endpoint.clone();
                        async move {
                            let Ok(ch) = endpoint.connect().await else {
                                return false;
                            };
                            tonic_health::pb::health_client::HealthClient::new(ch)
                                .check(tonic_health::pb::HealthCheckRequest::default())
                                .await
                                .is_ok_and(|r| r.into_inner().status == 1)
                        }
                    })
                    .await?
            }
        }
        Ok(server)
    }

    /// Starts `bench-echo-server` and waits until it answers.
    pub async fn echo() -> anyhow::Result<Self> {
        retry_if_port_taken(Self::try_echo).await
    }

    /// One attempt of [`Self::echo`].
    async fn try_echo() -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = this_binary(None)?
            .arg("bench-echo-server")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start bench-echo-server")?;
        let mut server = OwnServer {
            child,
            grpc: format!("http://127.0.0.1:{port}"),
            admin: None,
            dir: None,
        };
        let url = server.grpc.clone();
        server
            .wait_until(|| async {
                match EchoServiceClient::connect(url.clone()).await {
                    Ok(mut c) => c
                        .echo(crate::bench_proto::EchoRequest::default())
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            })
            .await?;
        Ok(server)
    }

    async fn wait_until<F, Fut>(&mut self, ready: F) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                let tail = self.log_tail(true);
                bail!("{} exited at start ({status}){tail}", self.grpc);
            }
            if Instant::now() > deadline {
                let tail = self.log_tail(false);
                bail!("{} not ready after 60 s{tail}", self.grpc);
            }
            if ready().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines the child logged (`exited`: the echo server's standard error can be read
    /// to its end).
    fn log_tail(&mut self, exited: bool) -> String {
        let Some(dir) = &self.dir else {
            let mut err = String::new();
            if let Some(mut pipe) = self.child.stderr.take().filter(|_| exited) {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
            }
            return format!(": {}", err.trim());
        };
        let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(": {}", tail.join("\n"))
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn durability_flag(d: Durability) -> &'static str {
    match d {
        Durability::Sync => "sync",
        Durability::Async => "async",
    }
}

/// `GET path` on an HTTP/1.1 server; returns the status code and the body.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_that_lost_its_port_is_started_again_and_other_failures_are_not() {
        let mut calls = 0;
        let got = retry_if_port_taken(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    bail!(
                        "http://127.0.0.1:1 exited at start: Address already in use (os error 98)"
                    )
                }
                Ok(n)
            }
        })
        .await
        .unwrap();
        assert_eq!(got, 3);

        let mut calls = 0;
        let err = retry_if_port_taken(|| {
            calls += 1;
            async { bail!("no such file") as anyhow::Result<()> }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 1, "{err}");

        let mut calls = 0;
        let err = retry_if_port_taken(|| {
            calls += 1;
            async { bail!("Address already in use") as anyhow::Result<()> }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 5, "gives up: {err}");
    }
}
