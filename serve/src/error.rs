//! Why the server could not start or run. Each variant names what was wrong.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why `triage serve` could not start or stopped with an error.
#[derive(Debug)]
pub enum ServeError {
    /// `--model` names no model the simulator knows (the message lists the valid ones).
    UnknownModel(String),
    /// The engine's cost model could not be fitted from the model's profile.
    CostModel(triage_sim::profile::ProfileError),
    /// `--config FILE` could not be read or is invalid (with line and column).
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: triage::ConfigError,
    },
    /// The configuration, with the simulated engine's limits, is refused by the scheduler.
    Scheduler(triage::ConfigError),
    /// A non-loopback address was asked for with no admin token set.
    AdminTokenRequired {
        /// The address asked for.
        host: String,
    },
    /// `--host` is not an IP address or a name that resolves.
    BadHost {
        /// What was given.
        host: String,
        /// Why it does not resolve.
        reason: String,
    },
    /// A limit or option is out of range.
    BadOption {
        /// The option (`--shutdown-grace`, `speed`, ...).
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The listening socket could not be bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another I/O failure (the runtime, the accept loop).
    Io(std::io::Error),
    /// The engine thread died (a bug: it panicked).
    EngineDied,
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownModel(msg) => write!(f, "--model: {msg}"),
            Self::CostModel(e) => write!(f, "engine cost model: {e}"),
            Self::Config { path, error } => write!(f, "--config {}: {error}", path.display()),
            Self::Scheduler(e) => write!(f, "scheduler configuration: {e}"),
            Self::AdminTokenRequired { host } => write!(
                f,
                "refusing to listen on {host} without an admin token: anyone who can reach it could \
                 reload the configuration. Set --admin-token or TRIAGE_ADMIN_TOKEN, or bind to \
                 loopback (--host 127.0.0.1)"
            ),
            Self::BadHost { host, reason } => write!(f, "--host {host}: {reason}"),
            Self::BadOption { option, reason } => write!(f, "{option}: {reason}"),
            Self::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Self::Io(e) => write!(f, "I/O: {e}"),
            Self::EngineDied => write!(f, "the engine thread panicked"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::CostModel(e) => Some(e),
            Self::Config { error, .. } | Self::Scheduler(error) => Some(error),
            Self::Bind { source, .. } => Some(source),
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}
