//! `import FILE` and `export`: the admin port's import jobs and export, from the command line.
//! Files are streamed both ways (never read into memory).

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Args;
use serde_json::Value;

/// Where the admin port is.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The daemon's admin HTTP address.
    #[arg(
        long,
        env = "SESSION_BROKER_ADMIN",
        default_value = "http://127.0.0.1:8080"
    )]
    pub admin: String,

    /// Bearer token (an admin token when the daemon has an auth file).
    #[arg(long, env = "SESSION_BROKER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// CA certificate (PEM) to verify the admin port's TLS certificate (https:// address).
    #[arg(long, env = "SESSION_BROKER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl AdminArgs {
    /// An HTTP client for the admin port: the token as a default header, the CA if given.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder();
        if let Some(t) = &self.token {
            let mut headers = reqwest::header::HeaderMap::new();
            let mut v: reqwest::header::HeaderValue = format!("Bearer {}", t.trim())
                .parse()
                .context("--token holds characters a header cannot carry")?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
            b = b.default_headers(headers);
        }
        if let Some(ca) = &self.tls_ca {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read --tls-ca {}", ca.display()))?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(b.build()?)
    }
}

/// `session-broker import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The file to import (JSONL, GameLift PlayerSession JSON lines, or CSV with a header).
    pub file: PathBuf,
    /// `jsonl` or `csv` (default: from the file's extension, else jsonl).
    #[arg(long, env = "SESSION_BROKER_IMPORT_FORMAT")]
    pub format: Option<String>,
    /// Wait for the job to finish and print its final status (exit 1 if it failed).
    #[arg(long, env = "SESSION_BROKER_IMPORT_WAIT")]
    pub wait: bool,
}

/// `session-broker export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// `jsonl` (game sessions and player sessions) or `csv` (player sessions).
    #[arg(long, env = "SESSION_BROKER_EXPORT_FORMAT", default_value = "jsonl")]
    pub format: String,
    /// Only this fleet.
    #[arg(long, env = "SESSION_BROKER_EXPORT_FLEET_ID")]
    pub fleet_id: Option<String>,
    /// Only player sessions with this status.
    #[arg(long, env = "SESSION_BROKER_EXPORT_STATUS")]
    pub status: Option<String>,
    /// Write here instead of standard output.
    #[arg(long, short, env = "SESSION_BROKER_EXPORT_OUTPUT")]
    pub output: Option<PathBuf>,
}

fn base(admin: &AdminArgs) -> String {
    let a = admin.admin.trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

async fn json_of(r: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Uploads a file as an import job; with `--wait`, follows it to the end.
pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let format = args.format.clone().unwrap_or_else(|| {
        match args.file.extension().and_then(|e| e.to_str()) {
            Some("csv") => "csv".into(),
            _ => "jsonl".into(),
        }
    });
    let file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let len = file.metadata().await?.len();
    let body =
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 << 10));
    let http = args.admin.client()?;
    let url = base(&args.admin);
    let r = http
        .post(format!("{url}/v1/import?format={format}"))
        .header(reqwest::header::CONTENT_LENGTH, len)
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let (status, v) = json_of(r).await?;
    if status != 202 {
        anyhow::bail!(
            "import refused ({status}): {}",
            v["error"].as_str().unwrap_or(&v.to_string())
        );
    }
    let job = v["job_id"].as_str().unwrap_or_default().to_string();
    if !args.wait {
        println!("{v}");
        return Ok(());
    }
    loop {
        let (_, s) = json_of(
            http.get(format!("{url}/v1/import/{job}/status"))
                .send()
                .await?,
        )
        .await?;
        if s["status"] != "running" {
            println!("{s}");
            if s["status"] == "failed" {
                anyhow::bail!("import job {job} failed");
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Streams an export to a file or standard output.
pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let url = base(&args.admin);
    let mut query = vec![("format", args.format.clone())];
    query.extend(args.fleet_id.clone().map(|f| ("fleet_id", f)));
    query.extend(args.status.clone().map(|s| ("status", s)));
    let r = args
        .admin
        .client()?
        .get(format!("{url}/v1/export"))
        .query(&query)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    if !r.status().is_success() {
        let (status, v) = json_of(r).await?;
        anyhow::bail!(
            "export refused ({status}): {}",
            v["error"].as_str().unwrap_or(&v.to_string())
        );
    }
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match &args.output {
        Some(p) => Box::new(
            tokio::fs::File::create(p)
                .await
                .with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk.context("export interrupted")?).await?;
    }
    out.flush().await?;
    Ok(())
}
