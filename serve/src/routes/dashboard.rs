//! The dashboard: one static page (`dashboard.html`, embedded in the binary, no build step)
//! whose inline script polls `GET /dashboard/state` once a second.
//!
//! The state is the same snapshot as `GET /admin/queue`: aggregate figures, as `/metrics`
//! publishes them, with no request content; it is open like `/metrics`.

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};

use super::error::ApiError;
use super::Shared;

/// The page.
pub const PAGE: &str = include_str!("../dashboard.html");

/// `GET /`.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /dashboard/state`.
pub async fn state(State(st): State<Shared>) -> Response {
    match st.engine.query().await {
        Some(s) => axum::Json(s).into_response(),
        None => ApiError::unavailable("the engine has stopped").into_response(),
    }
}
