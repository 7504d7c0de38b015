//! The interface between the simulated engine and a scheduling policy, and the
//! registry of policies selectable by name.
//!
//! Each iteration the engine shows the policy an [`EngineView`] (budgets, free KV
//! blocks, running requests) and the policy answers with a [`Plan`]: which waiting
//! requests to start (with their first prefill chunk), how many tokens each running
//! request computes, which running requests to preempt (recompute) and which
//! waiting requests to refuse. The engine validates the plan against its own state
//! and executes it.

pub mod fcfs;
pub mod triage_policy;
pub mod vllm_like;
pub mod vllm_priority;

use crate::class::SloTarget;
use crate::class::NUM_CLASSES;

/// Request identifier (unique within a run).
pub type ReqId = u64;

/// A request as it arrives.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRequest {
    /// Identifier.
    pub id: ReqId,
    /// Priority class: 0 = HIGH, 1 = MEDIUM, 2 = LOW.
    pub class: u8,
    /// Arrival time, seconds.
    pub arrival: f64,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Output tokens to generate (the request finishes after this many).
    pub output_tokens: u32,
    /// The tenant it belongs to (`triage tenants` sets it; traces carry none).
    pub tenant: Option<u64>,
}

/// What the engine tells the policy before each iteration.
#[derive(Debug, Clone)]
pub struct EngineView<'a> {
    /// Current time, seconds.
    pub now: f64,
    /// Maximum running requests.
    pub max_num_seqs: u32,
    /// Maximum tokens in this iteration (prefill chunks + one per decode).
    pub token_budget: u32,
    /// Free KV blocks.
    pub free_blocks: u32,
    /// Total KV blocks.
    pub total_blocks: u32,
    /// Tokens per KV block.
    pub block_size: u32,
    /// Blocks a policy should keep free when admitting (vLLM's watermark).
    pub watermark_blocks: u32,
    /// Model context length (prompt + output tokens) — an addition to the original sketch.
    pub max_model_len: u32,
    /// Running requests in start order (oldest start first).
    pub running: &'a [RunningView],
}

/// One running request as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningView {
    /// Identifier.
    pub id: ReqId,
    /// Priority class.
    pub class: u8,
    /// Original arrival time.
    pub arrival: f64,
    /// When it was (last) started.
    pub started: f64,
    /// Tokens to prefill in this run, including recomputed output tokens after a preemption.
    pub prompt_tokens: u32,
    /// Tokens whose KV has been computed in this run.
    pub computed_tokens: u32,
    /// Output tokens generated so far (over all runs).
    pub generated_tokens: u32,
    /// KV blocks held.
    pub blocks: u32,
    /// Tokens to prefill again if preempted now: original prompt + all generated tokens
    /// (an addition to the original sketch, so policies need not remember prompts).
    pub recompute_tokens: u32,
}

impl RunningView {
    /// Whether the prompt (incl. recompute) is fully computed, i.e. the request decodes.
    pub fn is_decoding(&self) -> bool {
        self.computed_tokens >= self.prompt_tokens
    }

    /// Tokens this request wants to compute in the next iteration: the rest of its
    /// prefill, or 1 when decoding.
    pub fn wanted_tokens(&self) -> u32 {
        if self.is_decoding() {
            1
        } else {
            self.prompt_tokens - self.computed_tokens
        }
    }
}

/// A policy's decision for one iteration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Waiting requests to start, with the prefill chunk to compute now.
    pub start: Vec<(ReqId, u32)>,
    /// Running requests to advance: remaining prefill chunk, or 1 for decode.
    pub run: Vec<(ReqId, u32)>,
    /// Running requests to preempt (recompute: all KV freed, prefill again later).
    pub preempt: Vec<ReqId>,
    /// Waiting requests to refuse, with a reason.
    pub reject: Vec<(ReqId, String)>,
}

/// A scheduling policy driven by the simulated engine.
pub trait Policy {
    /// Name as selected on the command line.
    fn name(&self) -> &str;
    /// A request arrived (it is waiting from now on).
    fn on_arrival(&mut self, req: &SimRequest, now: f64);
    /// Decide the next iteration.
    fn plan(&mut self, view: &EngineView) -> Plan;
    /// After the iteration executes: per request tokens computed, and finished ones. The
    /// default ignores them (a policy that keeps no per-request state).
    fn on_iteration_done(
        &mut self,
        _now: f64,
        _progressed: &[(ReqId, u32, u32)],
        _finished: &[ReqId],
    ) {
    }
}

/// Static facts a policy may need when it is built.
#[derive(Debug, Clone)]
pub struct PolicyContext {
    /// Model context length.
    pub max_model_len: u32,
    /// Total KV blocks of the engine.
    pub total_blocks: u32,
    /// Tokens per KV block.
    pub block_size: u32,
    /// KV watermark in blocks.
    pub watermark_blocks: u32,
    /// Per-class SLO targets (HIGH, MEDIUM, LOW).
    pub slos: [SloTarget; NUM_CLASSES],
    /// Seed of the run.
    pub seed: u64,
    /// The `triage` policy's configuration; `None` for the library defaults.
    pub triage_config: Option<triage::SchedulerConfig>,
}

/// A policy constructor.
pub type PolicyFactory = fn(&PolicyContext) -> Box<dyn Policy>;

/// Every selectable policy: `(name, constructor)`. Adding a policy is one line here.
pub const REGISTRY: &[(&str, PolicyFactory)] = &[
    ("fcfs", |ctx| Box::new(fcfs::Fcfs::new(ctx))),
    ("vllm-priority", |ctx| {
        Box::new(vllm_priority::VllmPriority::new(ctx))
    }),
    ("triage", |ctx| Box::new(triage_policy::Triage::new(ctx))),
    ("triage-ladder", |ctx| {
        Box::new(triage_policy::Triage::with_order(
            ctx,
            Some(triage::QueueOrder::Ladder),
        ))
    }),
];

/// Names of all registered policies.
pub fn policy_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|(n, _)| *n).collect()
}

/// Check that `name` is a registered policy; the error lists the valid names.
pub fn check_policy_name(name: &str) -> Result<(), String> {
    if REGISTRY.iter().any(|(n, _)| *n == name) {
        Ok(())
    } else {
        Err(unknown_policy(name))
    }
}

fn unknown_policy(name: &str) -> String {
    format!(
        "unknown policy `{name}`; valid policies: {}",
        policy_names().join(", ")
    )
}

/// Build the policy called `name`; the error lists the valid names.
pub fn make_policy(name: &str, ctx: &PolicyContext) -> Result<Box<dyn Policy>, String> {
    REGISTRY
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f(ctx))
        .ok_or_else(|| unknown_policy(name))
}
