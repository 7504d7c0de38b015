//! What `triage serve` is started with: the model, the scheduler's configuration, the
//! address, the secrets and the limits.

use std::path::PathBuf;
use std::time::Duration;

/// Environment variable read for the admin token when `--admin-token` is not given.
pub const ENV_ADMIN_TOKEN: &str = "TRIAGE_ADMIN_TOKEN";
/// Environment variable read for the API key when `--api-key` is not given.
pub const ENV_API_KEY: &str = "TRIAGE_API_KEY";

/// Everything the server needs. [`ServeOptions::default`] is `triage serve` with no flags.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The simulated model and GPU (`llama2-7b-a100`, see `triage simulate --help`).
    pub model: String,
    /// The scheduler's TOML configuration file; `None` for the library defaults. Its
    /// `engine` section is replaced by the simulated engine's limits.
    pub config: Option<PathBuf>,
    /// Address to listen on (an IP address or a name such as `localhost`).
    pub host: String,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// Bearer token for `/admin/*`; `None`: open on loopback, refused elsewhere.
    pub admin_token: Option<String>,
    /// API keys for the OpenAI routes (`Authorization: Bearer KEY`); empty: no key needed.
    /// With fairness on, a request without `X-Triage-Tenant` is charged to its key's tenant.
    pub api_keys: Vec<String>,
    /// How long running requests may take to finish after SIGTERM or Ctrl-C.
    pub shutdown_grace: Duration,
    /// Engine speed relative to the cost model: 1 is real time, 10 runs every iteration in
    /// a tenth of its modelled time (tests).
    pub speed: f64,
    /// Most requests running at once (vLLM `max_num_seqs`).
    pub max_num_seqs: u32,
    /// Tokens per iteration (vLLM `max_num_batched_tokens`).
    pub max_num_batched_tokens: u32,
    /// Largest request body in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Most generation requests open at once, streamed or not (503 above it).
    pub max_open_streams: usize,
    /// The vLLM `priority` of a request that gives neither a priority nor a class (vLLM's
    /// default is 0).
    pub default_priority: i64,
    /// Send the usage chunk at the end of every stream, as vLLM's
    /// `--enable-force-include-usage` does; off: only with `stream_options.include_usage`.
    pub force_include_usage: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            model: "llama2-7b-a100".into(),
            config: None,
            host: "127.0.0.1".into(),
            port: 8000,
            admin_token: None,
            api_keys: Vec::new(),
            shutdown_grace: Duration::from_secs(30),
            speed: 1.0,
            max_num_seqs: triage_sim::run::DEFAULT_MAX_NUM_SEQS,
            max_num_batched_tokens: triage_sim::run::DEFAULT_MAX_NUM_BATCHED_TOKENS,
            max_body_bytes: 1 << 20,
            max_open_streams: 4096,
            default_priority: 0,
            force_include_usage: false,
        }
    }
}
