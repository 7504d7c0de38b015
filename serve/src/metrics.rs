//! The server's Prometheus recorder and the families it adds to the library's.
//!
//! Each server builds its own `metrics-exporter-prometheus` recorder (none is installed
//! globally): the engine thread makes it its thread's default for its whole life, so the
//! scheduler's `triage_*` and `vllm:` families land in it, and the HTTP handlers call into
//! the scheduler under it ([`with`]). `GET /metrics` renders it.

use metrics::Unit;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

/// Gauge: KV blocks held by running requests in the simulated engine.
pub const ENGINE_KV_USED: &str = "triage_serve_engine_kv_blocks_used";
/// Gauge: KV blocks of the simulated engine in all.
pub const ENGINE_KV_TOTAL: &str = "triage_serve_engine_kv_blocks_total";
/// Gauge, 0 to 1: KV blocks used over total, as the simulated engine counts them.
pub const ENGINE_KV_USAGE: &str = "triage_serve_engine_kv_usage_ratio";
/// Gauge: requests running on the simulated engine.
pub const ENGINE_RUNNING: &str = "triage_serve_engine_running_requests";
/// Gauge: requests registered and not running (waiting in the scheduler or in ingress).
pub const ENGINE_WAITING: &str = "triage_serve_engine_waiting_requests";
/// Histogram, seconds: wall time of one engine iteration (the cost model's time / speed).
pub const ENGINE_ITERATION: &str = "triage_serve_engine_iteration_seconds";
/// Histogram `{class}`, seconds: arrival to first output token, as clients see it.
pub const TTFT: &str = "triage_serve_time_to_first_token_seconds";
/// Counter `{route, status}`: HTTP responses of the generation routes by status code.
pub const HTTP_RESPONSES: &str = "triage_serve_http_responses_total";
/// Gauge: generation requests open (streamed or not).
pub const OPEN_STREAMS: &str = "triage_serve_open_streams";
/// Histogram `{model_name}`, seconds: vLLM's time-to-first-token family.
pub const VLLM_TTFT: &str = "vllm:time_to_first_token_seconds";
/// Counter `{model_name}`: vLLM's prompt tokens, counted at each request's first admission.
pub const VLLM_PROMPT_TOKENS: &str = "vllm:prompt_tokens_total";
/// Counter `{model_name}`: vLLM's generation tokens.
pub const VLLM_GENERATION_TOKENS: &str = "vllm:generation_tokens_total";

/// Gauge `{class}`: the class's `queue_capacity` in force (for "queue near capacity"
/// alerts: `triage_queue_depth / triage_serve_queue_capacity`).
pub const QUEUE_CAPACITY: &str = "triage_serve_queue_capacity";

/// Label of the vLLM families: the served model.
pub const LABEL_MODEL: &str = "model_name";

/// Every family the server adds, for the docs check and the tests.
pub const SERVE_NAMES: [&str; 13] = [
    QUEUE_CAPACITY,
    ENGINE_KV_USED,
    ENGINE_KV_TOTAL,
    ENGINE_KV_USAGE,
    ENGINE_RUNNING,
    ENGINE_WAITING,
    ENGINE_ITERATION,
    TTFT,
    HTTP_RESPONSES,
    OPEN_STREAMS,
    VLLM_TTFT,
    VLLM_PROMPT_TOKENS,
    VLLM_GENERATION_TOKENS,
];

/// Histogram buckets, seconds: from a fast step to a minute's wait.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
    60.0,
];

/// A new recorder whose histograms render as Prometheus histograms.
pub fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .expect("the bucket list is not empty")
        .build_recorder()
}

/// Runs `f` with `recorder` as this thread's recorder (for calls into the scheduler from
/// HTTP handlers, whose refusals are counted through the facade).
pub fn with<T>(recorder: &PrometheusRecorder, f: impl FnOnce() -> T) -> T {
    metrics::with_local_recorder(recorder, f)
}

/// Describes the library's families and the server's (call under the recorder).
pub fn describe() {
    triage::telemetry::describe();
    metrics::describe_gauge!(
        ENGINE_KV_USED,
        "KV blocks held by running requests (simulated engine)."
    );
    metrics::describe_gauge!(ENGINE_KV_TOTAL, "KV blocks of the simulated engine.");
    metrics::describe_gauge!(
        ENGINE_KV_USAGE,
        "KV blocks used over total (simulated engine)."
    );
    metrics::describe_gauge!(ENGINE_RUNNING, "Requests running on the simulated engine.");
    metrics::describe_gauge!(ENGINE_WAITING, "Requests registered and not running.");
    metrics::describe_histogram!(
        ENGINE_ITERATION,
        Unit::Seconds,
        "Wall time of one engine iteration."
    );
    metrics::describe_histogram!(
        TTFT,
        Unit::Seconds,
        "Arrival to first output token, by class."
    );
    metrics::describe_counter!(
        HTTP_RESPONSES,
        "Responses of the generation routes, by route and status."
    );
    metrics::describe_gauge!(QUEUE_CAPACITY, "The class's queue_capacity in force.");
    metrics::describe_gauge!(OPEN_STREAMS, "Generation requests open (streamed or not).");
    metrics::describe_histogram!(
        VLLM_TTFT,
        Unit::Seconds,
        "Time to first token (vLLM's family)."
    );
    metrics::describe_counter!(
        VLLM_PROMPT_TOKENS,
        "Prompt tokens processed (vLLM's family)."
    );
    metrics::describe_counter!(VLLM_GENERATION_TOKENS, "Generation tokens (vLLM's family).");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_documented() {
        let doc = include_str!("../../docs/serve.md");
        for name in SERVE_NAMES {
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} is not in docs/serve.md"
            );
        }
    }
}
