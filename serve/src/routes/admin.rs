//! `POST /admin/config` (live reload from a TOML body) and `GET /admin/queue`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{read_body, ApiError};
use super::Shared;

/// `POST /admin/config`: the body is a whole TOML configuration (`triage.example.toml`'s
/// format). It is checked at once (400 with the field, line and column), then applied at
/// the engine's next step (200 with the new epoch) or refused there (409 with the
/// reason). Either way a refused configuration leaves the old one in force. Its `engine`
/// section is replaced by the simulated engine's limits.
pub async fn reload(State(st): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match read_body(body, st.max_body_bytes) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return ApiError::new(StatusCode::BAD_REQUEST, "the body is not UTF-8 text")
            .into_response();
    };
    let config = match triage::SchedulerConfig::from_toml_str(text) {
        Ok(c) => c,
        Err(e) => {
            let (line, column) = e.location.map_or((None, None), |(l, c)| (Some(l), Some(c)));
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "object": "error",
                    "type": "BadRequestError",
                    "code": 400,
                    "message": e.to_string(),
                    "param": e.field,
                    "expected": e.expected,
                    "found": e.found,
                    "line": line,
                    "column": column,
                    "applied": false,
                })),
            )
                .into_response();
        }
    };
    match st.engine.reload(config).await {
        Ok(outcome) => (
            StatusCode::OK,
            axum::Json(json!({ "applied": true, "reload": outcome })),
        )
            .into_response(),
        Err(reason) => (
            StatusCode::CONFLICT,
            axum::Json(json!({
                "object": "error",
                "type": "ConflictError",
                "code": 409,
                "message": format!("reload refused; the old configuration stays in force: {reason}"),
                "param": null,
                "applied": false,
            })),
        )
            .into_response(),
    }
}

/// `GET /admin/queue`: depth per class, oldest wait, SLO compliance per window, the
/// engine and the conservation law (the [`crate::protocol::Snapshot`] as JSON).
pub async fn queue(State(st): State<Shared>) -> Response {
    match st.engine.query().await {
        Some(s) => axum::Json(s).into_response(),
        None => ApiError::unavailable("the engine has stopped").into_response(),
    }
}
