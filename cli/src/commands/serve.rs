//! `triage serve`: its arguments and its run (the server is `triage_serve`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use triage_serve::{ServeOptions, ENV_ADMIN_TOKEN, ENV_API_KEY};

/// `triage serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Simulated model and GPU (see `triage simulate --help` for the list).
    #[arg(long, default_value = "llama2-7b-a100")]
    model: String,
    /// Scheduler configuration (TOML, see triage.example.toml); its `engine` section is
    /// replaced by the simulated engine's. Reload it live with `POST /admin/config`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on. Anything but loopback needs an admin token.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Bearer token for /admin/* (else $TRIAGE_ADMIN_TOKEN; none: admin is open, on
    /// loopback only).
    #[arg(long)]
    admin_token: Option<String>,
    /// API key for the /v1 routes (repeatable; else $TRIAGE_API_KEY; none: no key needed).
    #[arg(long)]
    api_key: Vec<String>,
    /// How long running requests may take to finish after SIGTERM or Ctrl-C (e.g. 30s,
    /// 500ms, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// Engine speed relative to the cost model (1: real time; 10: ten times faster).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Most requests running at once (vLLM's max_num_seqs).
    #[arg(long, default_value_t = 256)]
    max_num_seqs: u32,
    /// Tokens per engine iteration (vLLM's max_num_batched_tokens).
    #[arg(long, default_value_t = 2048)]
    max_num_batched_tokens: u32,
    /// Largest request body in bytes (413 above it).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Most generation requests open at once (503 above it).
    #[arg(long, default_value_t = 4096)]
    max_open_streams: usize,
    /// vLLM priority of a request that gives neither `priority` nor a class.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    default_priority: i64,
    /// Send the usage chunk at the end of every stream (vLLM's flag of the same name).
    #[arg(long)]
    enable_force_include_usage: bool,
}

/// `30s`, `500ms`, `2m`, `1h` or a number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a duration"))
}

/// Runs the server until SIGTERM or Ctrl-C; exit 0 after a clean shutdown, 2 if it could
/// not start.
pub fn run(a: ServeArgs) -> ExitCode {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut api_keys = a.api_key;
    if api_keys.is_empty() {
        api_keys.extend(env(ENV_API_KEY));
    }
    let opts = ServeOptions {
        model: a.model,
        config: a.config,
        host: a.host,
        port: a.port,
        admin_token: a.admin_token.or_else(|| env(ENV_ADMIN_TOKEN)),
        api_keys,
        shutdown_grace: a.shutdown_grace,
        speed: a.speed,
        max_num_seqs: a.max_num_seqs,
        max_num_batched_tokens: a.max_num_batched_tokens,
        max_body_bytes: a.max_body_bytes,
        max_open_streams: a.max_open_streams,
        default_priority: a.default_priority,
        force_include_usage: a.enable_force_include_usage,
    };
    match triage_serve::serve(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
