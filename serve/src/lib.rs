//! `triage serve`: a vLLM-compatible HTTP server on the real triage [`triage::Scheduler`]
//! and the simulated engine of `triage simulate`, with Prometheus metrics, admin routes
//! and a live dashboard. The reference is `docs/serve.md`.
//!
//! Modules depend one way, from the top:
//!
//! * this file: [`start`] a [`Server`] (tests) or [`serve`] until a signal (the CLI);
//! * [`routes`]: the HTTP routes (OpenAI-compatible, admin, dashboard, info) and their
//!   authentication;
//! * [`engine`]: the engine thread, which owns the scheduler; [`protocol`]: what handlers
//!   and the engine tell each other;
//! * [`metrics`], [`tokenizer`], [`shutdown`], [`options`], [`error`]: leaves.

#![forbid(unsafe_code)]

pub mod engine;
pub mod error;
pub mod metrics;
pub mod options;
pub mod protocol;
pub mod routes;
pub mod shutdown;
pub mod tokenizer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

pub use error::ServeError;
pub use options::{ServeOptions, ENV_ADMIN_TOKEN, ENV_API_KEY};

use engine::{Engine, EngineSpec};
use protocol::Command;
use routes::AppState;

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    state: routes::Shared,
    stop: tokio::sync::watch::Sender<bool>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    grace: Duration,
}

/// Builds the engine and binds the listener; the server runs on the current tokio runtime
/// until [`Server::shutdown`].
pub async fn start(opts: ServeOptions) -> Result<Server, ServeError> {
    let bad = |option: &'static str, reason: String| ServeError::BadOption { option, reason };
    if !(opts.speed.is_finite() && opts.speed > 0.0) {
        return Err(bad(
            "speed",
            format!("must be a positive number, not {}", opts.speed),
        ));
    }
    if opts.max_num_seqs == 0 || opts.max_num_batched_tokens == 0 {
        return Err(bad(
            "max_num_seqs / max_num_batched_tokens",
            "must be at least 1".into(),
        ));
    }
    if opts.max_open_streams == 0 || opts.max_body_bytes == 0 {
        return Err(bad(
            "--max-open-streams / --max-body-bytes",
            "must be at least 1".into(),
        ));
    }
    let addr = tokio::net::lookup_host((opts.host.as_str(), opts.port))
        .await
        .map_err(|e| ServeError::BadHost {
            host: opts.host.clone(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ServeError::BadHost {
            host: opts.host.clone(),
            reason: "resolves to no address".into(),
        })?;
    routes::auth::check_bind(&opts.host, addr.ip(), opts.admin_token.as_deref())?;

    let model = triage_sim::model::model_by_name(&opts.model).map_err(ServeError::UnknownModel)?;
    let data = triage_sim::run::default_data_dir();
    let (cost, _fit) = triage_sim::cost::fit_cost_model(&model, &data.join("profiles"))
        .map_err(ServeError::CostModel)?;
    let config = match &opts.config {
        None => triage::SchedulerConfig::default(),
        Some(path) => {
            triage::SchedulerConfig::from_path(path).map_err(|error| ServeError::Config {
                path: path.clone(),
                error,
            })?
        }
    };
    let spec = EngineSpec {
        max_model_len: model.max_model_len,
        model,
        cost,
        max_num_seqs: opts.max_num_seqs,
        max_num_batched_tokens: opts.max_num_batched_tokens,
        speed: opts.speed,
    };
    let max_model_len = spec.max_model_len;
    let model_name = spec.model.name.to_string();
    let recorder = Arc::new(metrics::recorder());
    let prometheus = recorder.handle();
    let engine = Engine::start(config, spec, Arc::clone(&recorder))?;
    let state = Arc::new(AppState {
        engine,
        recorder,
        prometheus,
        model: model_name,
        max_model_len,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        admin_token: opts.admin_token.filter(|t| !t.is_empty()),
        api_keys: opts
            .api_keys
            .into_iter()
            .filter(|k| !k.is_empty())
            .collect(),
        max_body_bytes: opts.max_body_bytes,
        max_open_streams: opts.max_open_streams,
        open_streams: AtomicUsize::new(0),
        next_id: AtomicU64::new(1),
        default_priority: opts.default_priority,
        force_include_usage: opts.force_include_usage,
    });
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(source) => {
            state.engine.send(Command::Shutdown {
                grace: Duration::ZERO,
            });
            return Err(ServeError::Bind { addr, source });
        }
    };
    let addr = listener.local_addr().map_err(ServeError::Io)?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let app = routes::router(Arc::clone(&state));
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    });
    Ok(Server {
        addr,
        state,
        stop,
        http,
        grace: opts.shutdown_grace,
    })
}

impl Server {
    /// The address it listens on (with the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Begins the shutdown (see [`shutdown`]): stop accepting, end waiting requests, let
    /// running ones finish within the grace.
    pub fn shutdown(&self) {
        self.state
            .engine
            .send(Command::Shutdown { grace: self.grace });
        let _ = self.stop.send(true);
    }

    /// Waits for the shutdown to complete: every response written and the engine thread
    /// ended. Returns the scheduler's final conservation law.
    pub async fn wait(self) -> Result<triage::Conservation, ServeError> {
        self.http
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))?
            .map_err(ServeError::Io)?;
        let state = self.state;
        tokio::task::spawn_blocking(move || state.engine.join())
            .await
            .ok()
            .flatten()
            .ok_or(ServeError::EngineDied)
    }
}

/// Runs the server until SIGTERM or Ctrl-C, then shuts down (see [`shutdown`]). Prints
/// where it listens to stderr.
pub fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Io)?;
    runtime.block_on(async move {
        let grace = opts.shutdown_grace;
        let server = start(opts).await?;
        eprintln!(
            "triage serve: listening on http://{} (dashboard at /, metrics at /metrics)",
            server.local_addr()
        );
        shutdown::signal().await;
        eprintln!("triage serve: shutting down (grace {grace:?})");
        server.shutdown();
        // The grace bounds the running requests; the rest is writing the last responses.
        match tokio::time::timeout(grace + Duration::from_secs(10), server.wait()).await {
            Ok(Ok(c)) => {
                eprintln!("triage serve: stopped; {c}");
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                eprintln!("triage serve: connections still open 10 s past the grace; exiting");
                Ok(())
            }
        }
    })
}
