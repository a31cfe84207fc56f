//! `POST /v1/import?format=jsonl|csv` (the file as the body, streamed to the data directory)
//! -> 202 `{"job_id"}`; `GET /v1/import/{job_id}/status`; `GET /v1/import`;
//! `DELETE /v1/import/{job_id}` cancels a running job. Status has the shape of an
//! `ImportJobStatus`: job_id, status (running | completed | failed), format, total, imported,
//! skipped, errors (the first 1,000 plus "... N more"), started_at, finished_at (Unix seconds,
//! null while running).

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

use super::{recovering, AdminState};
use crate::{
    domain::Timestamp,
    import::{jobs::UploadError, records::Format},
    store::{ImportJob, JobStatus},
};

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn unix_seconds(t: Timestamp) -> i64 {
    t.as_micros().div_euclid(1_000_000)
}

/// The status document of a job.
pub fn status_json(j: &ImportJob) -> Value {
    let mut errors: Vec<Value> = j.errors.iter().map(|e| json!(e.as_ref())).collect();
    if j.progress.more_errors > 0 {
        errors.push(json!(format!("... {} more", j.progress.more_errors)));
    }
    if let Some(f) = &j.failure {
        errors.push(json!(format!("job failed: {f}")));
    }
    json!({
        "job_id": j.id.as_ref(),
        "status": j.status.as_str(),
        "format": j.format.as_ref(),
        "total": j.progress.total,
        "imported": j.progress.imported,
        "skipped": j.progress.skipped,
        "errors": errors,
        "started_at": unix_seconds(j.started_at),
        "finished_at": j.finished_at.filter(|_| j.status != JobStatus::Running).map(unix_seconds),
    })
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct ImportQuery {
    format: Option<String>,
}

pub(super) async fn upload(
    State(s): State<AdminState>,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> Response {
    if s.serving.get().is_none() {
        return recovering();
    }
    let Some(imports) = s.serving.imports() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "imports need a data directory",
        );
    };
    let Some(format) = q.format.as_deref().and_then(Format::parse) else {
        return error(StatusCode::BAD_REQUEST, "format: must be jsonl or csv");
    };
    match imports.upload(format, body.into_data_stream()).await {
        Ok(job) => (
            StatusCode::ACCEPTED,
            Json(json!({ "job_id": job.as_ref() })),
        )
            .into_response(),
        Err(e @ UploadError::BadRequest(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ UploadError::TooLarge(_)) => error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        Err(e @ UploadError::Io(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub(super) async fn status(State(s): State<AdminState>, Path(job): Path<String>) -> Response {
    let Some((store, _)) = s.serving.get() else {
        return recovering();
    };
    match store.import_job(&job) {
        Some(j) => Json(status_json(&j)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("import job {job} not found")),
    }
}

pub(super) async fn list(State(s): State<AdminState>) -> Response {
    let Some((store, _)) = s.serving.get() else {
        return recovering();
    };
    let jobs: Vec<Value> = store.import_jobs().iter().map(status_json).collect();
    Json(json!({ "jobs": jobs })).into_response()
}

pub(super) async fn cancel(State(s): State<AdminState>, Path(job): Path<String>) -> Response {
    let Some((store, _)) = s.serving.get() else {
        return recovering();
    };
    let Some(j) = store.import_job(&job) else {
        return error(StatusCode::NOT_FOUND, format!("import job {job} not found"));
    };
    if j.status != JobStatus::Running {
        return error(
            StatusCode::CONFLICT,
            format!("import job {job} is {}", j.status.as_str()),
        );
    }
    match s.serving.imports().map(|i| i.cancel(&job)) {
        Some(true) => (StatusCode::ACCEPTED, Json(status_json(&j))).into_response(),
        _ => error(
            StatusCode::CONFLICT,
            format!("import job {job} is not running here"),
        ),
    }
}
