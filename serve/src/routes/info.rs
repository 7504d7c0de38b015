//! `GET /v1/models`, `/health`, `/version` and `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;

/// `GET /v1/models`: the one served model, as vLLM lists it.
pub async fn models(State(st): State<Shared>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": st.model,
            "object": "model",
            "created": st.created,
            "owned_by": "triage",
            "root": st.model,
            "parent": null,
            "max_model_len": st.max_model_len,
            "permission": [],
        }],
    }))
    .into_response()
}

/// `GET /health`: 200 while serving, 503 once the shutdown began.
pub async fn health(State(st): State<Shared>) -> StatusCode {
    if st.engine.stats().shutting_down() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// `GET /version`.
pub async fn version() -> Response {
    axum::Json(json!({ "version": env!("CARGO_PKG_VERSION") })).into_response()
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(st): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.prometheus.render(),
    )
        .into_response()
}
