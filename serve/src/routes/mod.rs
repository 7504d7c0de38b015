//! The HTTP routes and the state they share.
//!
//! * OpenAI-compatible, behind the API key when one is set: `POST /v1/completions`,
//!   `POST /v1/chat/completions` ([`completions`]), `GET /v1/models` ([`info`]).
//! * Open: `GET /health`, `/version`, `/metrics` ([`info`]), the dashboard `GET /` and its
//!   `GET /dashboard/state` ([`dashboard`]).
//! * Admin, behind the admin token when one is set: `POST /admin/config`,
//!   `GET /admin/queue` ([`admin`]).

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};

use crate::engine::Engine;

pub mod admin;
pub mod auth;
pub mod completions;
pub mod dashboard;
pub mod error;
pub mod info;
pub mod request;
pub mod response;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The engine thread and the scheduler's submitter.
    pub engine: Engine,
    /// The server's metrics recorder (calls into the scheduler run under it).
    pub recorder: Arc<PrometheusRecorder>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// The served model's name.
    pub model: String,
    /// Its context length.
    pub max_model_len: u32,
    /// When the server started, Unix seconds.
    pub created: u64,
    /// The admin token, if set.
    pub admin_token: Option<String>,
    /// The API keys, if any.
    pub api_keys: Vec<String>,
    /// Largest body, bytes.
    pub max_body_bytes: usize,
    /// Most generation requests open at once.
    pub max_open_streams: usize,
    /// Generation requests open now.
    pub open_streams: AtomicUsize,
    /// The next request id.
    pub next_id: AtomicU64,
    /// Priority of a request that names neither a priority nor a class.
    pub default_priority: i64,
    /// Usage chunk at the end of every stream.
    pub force_include_usage: bool,
}

/// The shared state as handlers take it.
pub type Shared = Arc<AppState>;

/// Every route of the server, with the API-key and admin-token layers and the body limit.
pub fn router(state: Shared) -> Router {
    let openai = Router::new()
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/models", get(info::models))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::api_key,
        ));
    let admin = Router::new()
        .route("/admin/config", post(admin::reload))
        .route("/admin/queue", get(admin::queue))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::admin_token,
        ));
    let open = Router::new()
        .route("/health", get(info::health))
        .route("/version", get(info::version))
        .route("/metrics", get(info::metrics))
        .route("/", get(dashboard::page))
        .route("/dashboard/state", get(dashboard::state));
    let limit = state.max_body_bytes;
    openai
        .merge(admin)
        .merge(open)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
