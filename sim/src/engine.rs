//! The discrete-event model of one GPU engine with continuous batching.
//!
//! Time advances only by iterations (whose length the [`CostModel`] gives) and by
//! idle jumps to the next arrival. Before each iteration, arrivals up to `now` are
//! delivered to the policy, the policy plans, the engine validates the plan against
//! its own state (request states, token budget, `max_num_seqs`, KV blocks never
//! negative nor above capacity) and executes it:
//!
//! * a prefill chunk advances the request's computed tokens; the iteration that
//!   completes the prompt also produces the first output token (TTFT = end of that
//!   iteration - arrival);
//! * a decoding request produces one token per iteration;
//! * KV: a start reserves `ceil(prompt/block)` blocks; a request gets one more
//!   block whenever its computed context crosses a block boundary;
//! * preemption is by recompute: all blocks are freed, computed tokens reset to 0,
//!   and the tokens generated so far join the prompt to recompute (like vLLM).

use std::collections::HashMap;
use std::fmt;

use super::budget::blocks_for;
use super::cost::{CostModel, IterationWork};
use crate::policies::{EngineView, Policy, ReqId, RunningView, SimRequest};

/// Engine limits (also written, as they are, into the report).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EngineConfig {
    /// Maximum running requests (vLLM `max_num_seqs`).
    pub max_num_seqs: u32,
    /// Token budget per iteration (vLLM `max_num_batched_tokens`).
    pub max_num_batched_tokens: u32,
    /// KV blocks.
    pub total_blocks: u32,
    /// Tokens per block.
    pub block_size: u32,
    /// Blocks kept free at admission (advisory to policies).
    pub watermark_blocks: u32,
    /// Model context length.
    pub max_model_len: u32,
}

impl EngineConfig {
    /// Watermark of `frac` of `total_blocks`, rounded up (vLLM: 0.01).
    pub fn watermark_for(total_blocks: u32, frac: f64) -> u32 {
        (f64::from(total_blocks) * frac).ceil() as u32
    }
}

/// How one request ended up.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Identifier.
    pub id: ReqId,
    /// Class.
    pub class: u8,
    /// Arrival time, s.
    pub arrival: f64,
    /// Original prompt tokens.
    pub prompt_tokens: u32,
    /// Output tokens requested.
    pub output_tokens: u32,
    /// Output tokens produced.
    pub generated_tokens: u32,
    /// First admission (start), s.
    pub first_start: Option<f64>,
    /// First output token, s.
    pub first_token: Option<f64>,
    /// Last output token, s.
    pub finish: Option<f64>,
    /// Times preempted.
    pub preemptions: u32,
    /// Refusal reason, if refused.
    pub rejected: Option<String>,
}

/// Result of replaying a workload through one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// One outcome per request, in input order.
    pub outcomes: Vec<Outcome>,
    /// Iterations executed.
    pub iterations: u64,
    /// Sum of iteration durations, s.
    pub busy_s: f64,
    /// First arrival, s.
    pub start_s: f64,
    /// Time the last request ended, s.
    pub end_s: f64,
    /// Largest number of KV blocks in use at once.
    pub peak_blocks_used: u32,
    /// Largest number of running requests at once.
    pub peak_running: u32,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq)]
pub enum SimError {
    /// The policy returned a plan the engine cannot execute.
    InvalidPlan {
        /// Policy name.
        policy: String,
        /// Iteration number.
        iteration: u64,
        /// Simulated time, s.
        now: f64,
        /// What is wrong.
        reason: String,
    },
    /// Requests wait, nothing runs and nothing will arrive: the policy is stuck.
    Stalled {
        /// Policy name.
        policy: String,
        /// Simulated time, s.
        now: f64,
        /// Waiting requests.
        waiting: usize,
    },
    /// An internal invariant broke (a bug in the engine).
    Invariant(String),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPlan { policy, iteration, now, reason } => {
                write!(f, "policy `{policy}` returned an invalid plan at iteration {iteration} (t={now:.6}s): {reason}")
            }
            Self::Stalled { policy, now, waiting } => write!(
                f,
                "policy `{policy}` stalled at t={now:.3}s: {waiting} requests wait, none runs and none will arrive"
            ),
            Self::Invariant(s) => write!(f, "engine invariant violated: {s}"),
        }
    }
}

impl std::error::Error for SimError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Future,
    Waiting,
    Running,
    Done,
}

#[derive(Debug, Clone)]
struct State {
    status: Status,
    prompt: u32,
    computed: u32,
    generated: u32,
    blocks: u32,
    started: f64,
    /// Iteration that last touched this request in a plan (duplicate detection).
    stamp: u64,
}

/// The simulated engine (see the module docs). Use [`run`] for a whole replay.
pub struct Engine<'a> {
    cfg: EngineConfig,
    reqs: &'a [SimRequest],
    index: HashMap<ReqId, usize>,
    st: Vec<State>,
    out: Vec<Outcome>,
    running: Vec<usize>,
    free_blocks: u32,
    waiting: usize,
    now: f64,
    iteration: u64,
}

/// Progress callback: called now and then with the simulated time.
pub type Progress<'p> = &'p mut dyn FnMut(f64);

/// Replay `reqs` (sorted by arrival) through `policy` and return every outcome.
pub fn run(
    reqs: &[SimRequest],
    policy: &mut dyn Policy,
    cost: &dyn CostModel,
    cfg: &EngineConfig,
    progress: Option<Progress>,
) -> Result<RunResult, SimError> {
    Engine::new(reqs, cfg.clone())?.run(policy, cost, progress)
}

impl<'a> Engine<'a> {
    /// An idle engine about to receive `reqs` (must be sorted by arrival, unique ids).
    pub fn new(reqs: &'a [SimRequest], cfg: EngineConfig) -> Result<Self, SimError> {
        let mut index = HashMap::with_capacity(reqs.len());
        for (i, r) in reqs.iter().enumerate() {
            if index.insert(r.id, i).is_some() {
                return Err(SimError::Invariant(format!(
                    "duplicate request id {}",
                    r.id
                )));
            }
            if i > 0 && r.arrival < reqs[i - 1].arrival {
                return Err(SimError::Invariant(format!(
                    "requests not sorted by arrival at id {}",
                    r.id
                )));
            }
        }
        let st = reqs
            .iter()
            .map(|r| State {
                status: Status::Future,
                prompt: r.prompt_tokens,
                computed: 0,
                generated: 0,
                blocks: 0,
                started: 0.0,
                stamp: u64::MAX,
            })
            .collect();
        let out = reqs
            .iter()
            .map(|r| Outcome {
                id: r.id,
                class: r.class,
                arrival: r.arrival,
                prompt_tokens: r.prompt_tokens,
                output_tokens: r.output_tokens,
                generated_tokens: 0,
                first_start: None,
                first_token: None,
                finish: None,
                preemptions: 0,
                rejected: None,
            })
            .collect();
        Ok(Self {
            free_blocks: cfg.total_blocks,
            cfg,
            reqs,
            index,
            st,
            out,
            running: Vec::new(),
            waiting: 0,
            now: 0.0,
            iteration: 0,
        })
    }

    fn view_of(&self, i: usize) -> RunningView {
        let s = &self.st[i];
        let r = &self.reqs[i];
        RunningView {
            id: r.id,
            class: r.class,
            arrival: r.arrival,
            started: s.started,
            prompt_tokens: s.prompt,
            computed_tokens: s.computed,
            generated_tokens: s.generated,
            blocks: s.blocks,
            recompute_tokens: r.prompt_tokens + s.generated,
        }
    }

    fn bad(&self, policy: &str, reason: String) -> SimError {
        SimError::InvalidPlan {
            policy: policy.to_string(),
            iteration: self.iteration,
            now: self.now,
            reason,
        }
    }

    fn lookup(&self, policy: &str, id: ReqId, what: &str) -> Result<usize, SimError> {
        self.index
            .get(&id)
            .copied()
            .ok_or_else(|| self.bad(policy, format!("{what}: unknown request id {id}")))
    }

    fn touch(&mut self, policy: &str, i: usize, what: &str) -> Result<(), SimError> {
        if self.st[i].stamp == self.iteration {
            return Err(self.bad(
                policy,
                format!(
                    "{what}: request {} appears twice in the plan",
                    self.reqs[i].id
                ),
            ));
        }
        self.st[i].stamp = self.iteration;
        Ok(())
    }

    fn take_blocks(&mut self, policy: &str, n: u32, who: ReqId) -> Result<(), SimError> {
        self.free_blocks = self.free_blocks.checked_sub(n).ok_or_else(|| {
            self.bad(
                policy,
                format!(
                    "request {who} needs {n} KV blocks, only {} free",
                    self.free_blocks
                ),
            )
        })?;
        Ok(())
    }

    fn check_invariants(&self) -> Result<(), SimError> {
        let held: u64 = self
            .running
            .iter()
            .map(|&i| u64::from(self.st[i].blocks))
            .sum();
        if held + u64::from(self.free_blocks) != u64::from(self.cfg.total_blocks) {
            return Err(SimError::Invariant(format!(
                "blocks held {held} + free {} != total {}",
                self.free_blocks, self.cfg.total_blocks
            )));
        }
        if self.running.len() > self.cfg.max_num_seqs as usize {
            return Err(SimError::Invariant(format!(
                "{} running > max_num_seqs",
                self.running.len()
            )));
        }
        Ok(())
    }

    /// Run to completion: every request finished or refused.
    pub fn run(
        mut self,
        policy: &mut dyn Policy,
        cost: &dyn CostModel,
        mut progress: Option<Progress>,
    ) -> Result<RunResult, SimError> {
        let name = policy.name().to_string();
        let n = self.reqs.len();
        let mut next = 0usize;
        let start_s = self.reqs.first().map_or(0.0, |r| r.arrival);
        self.now = start_s;
        let mut busy = 0.0;
        let mut peak_blocks = 0u32;
        let mut peak_running = 0u32;
        let mut views: Vec<RunningView> = Vec::new();
        let mut work = IterationWork::default();
        let mut scheduled: Vec<(usize, u32)> = Vec::new();
        let mut progressed: Vec<(ReqId, u32, u32)> = Vec::new();
        let mut finished: Vec<ReqId> = Vec::new();
        let mut idle_plans = 0u32;

        loop {
            while next < n && self.reqs[next].arrival <= self.now {
                self.st[next].status = Status::Waiting;
                self.waiting += 1;
                policy.on_arrival(&self.reqs[next], self.now);
                next += 1;
            }
            if self.running.is_empty() && self.waiting == 0 {
                if next < n {
                    self.now = self.now.max(self.reqs[next].arrival);
                    continue;
                }
                break;
            }
            views.clear();
            views.extend(self.running.iter().map(|&i| self.view_of(i)));
            let view = EngineView {
                now: self.now,
                max_num_seqs: self.cfg.max_num_seqs,
                token_budget: self.cfg.max_num_batched_tokens,
                free_blocks: self.free_blocks,
                total_blocks: self.cfg.total_blocks,
                block_size: self.cfg.block_size,
                watermark_blocks: self.cfg.watermark_blocks,
                max_model_len: self.cfg.max_model_len,
                running: &views,
            };
            let plan = policy.plan(&view);
            self.iteration += 1;
            let it = self.iteration;

            // 1. Preemptions free KV first.
            for &id in &plan.preempt {
                let i = self.lookup(&name, id, "preempt")?;
                if self.st[i].status != Status::Running {
                    return Err(self.bad(&name, format!("preempt: request {id} is not running")));
                }
                self.touch(&name, i, "preempt")?;
                let s = &mut self.st[i];
                self.free_blocks += s.blocks;
                s.blocks = 0;
                s.computed = 0;
                s.prompt = self.reqs[i].prompt_tokens + s.generated;
                s.status = Status::Waiting;
                self.out[i].preemptions += 1;
                self.waiting += 1;
            }
            if !plan.preempt.is_empty() {
                let st = &self.st;
                self.running.retain(|&i| st[i].status == Status::Running);
            }
            // 2. Refusals.
            for (id, reason) in &plan.reject {
                let i = self.lookup(&name, *id, "reject")?;
                if self.st[i].status != Status::Waiting {
                    return Err(self.bad(&name, format!("reject: request {id} is not waiting")));
                }
                self.touch(&name, i, "reject")?;
                self.st[i].status = Status::Done;
                self.out[i].rejected = Some(reason.clone());
                self.out[i].finish = Some(self.now);
                self.waiting -= 1;
            }
            // 3. Running requests advance (may grow by a block).
            scheduled.clear();
            let mut tokens: u64 = 0;
            for &(id, k) in &plan.run {
                let i = self.lookup(&name, id, "run")?;
                if self.st[i].status != Status::Running {
                    return Err(self.bad(&name, format!("run: request {id} is not running")));
                }
                self.touch(&name, i, "run")?;
                let s = &self.st[i];
                let max = if s.computed >= s.prompt {
                    1
                } else {
                    s.prompt - s.computed
                };
                if k == 0 || k > max {
                    return Err(self.bad(
                        &name,
                        format!("run: request {id} given {k} tokens, allowed 1..={max}"),
                    ));
                }
                let need = blocks_for(s.computed + k, self.cfg.block_size).saturating_sub(s.blocks);
                self.take_blocks(&name, need, id)?;
                self.st[i].blocks += need;
                tokens += u64::from(k);
                scheduled.push((i, k));
            }
            // 4. Starts reserve blocks for the whole prompt.
            for &(id, k) in &plan.start {
                let i = self.lookup(&name, id, "start")?;
                if self.st[i].status != Status::Waiting {
                    return Err(self.bad(&name, format!("start: request {id} is not waiting")));
                }
                self.touch(&name, i, "start")?;
                let prompt = self.st[i].prompt;
                if k == 0 || k > prompt {
                    return Err(self.bad(
                        &name,
                        format!("start: request {id} given chunk {k}, allowed 1..={prompt}"),
                    ));
                }
                let need = blocks_for(prompt, self.cfg.block_size);
                self.take_blocks(&name, need, id)?;
                let s = &mut self.st[i];
                s.blocks = need;
                s.status = Status::Running;
                s.started = self.now;
                self.out[i].first_start.get_or_insert(self.now);
                self.waiting -= 1;
                self.running.push(i);
                tokens += u64::from(k);
                scheduled.push((i, k));
            }
            if tokens > u64::from(self.cfg.max_num_batched_tokens) {
                return Err(self.bad(
                    &name,
                    format!(
                        "{tokens} batched tokens exceed the budget {}",
                        self.cfg.max_num_batched_tokens
                    ),
                ));
            }
            if self.running.len() > self.cfg.max_num_seqs as usize {
                return Err(self.bad(
                    &name,
                    format!(
                        "{} running requests exceed max_num_seqs {}",
                        self.running.len(),
                        self.cfg.max_num_seqs
                    ),
                ));
            }
            self.check_invariants()?;
            peak_blocks = peak_blocks.max(self.cfg.total_blocks - self.free_blocks);
            peak_running = peak_running.max(self.running.len() as u32);

            if scheduled.is_empty() {
                // Nothing to compute. Progress can only come from refusals/preemptions
                // just made, or from a future arrival.
                if !plan.reject.is_empty() || !plan.preempt.is_empty() {
                    idle_plans += 1;
                    if idle_plans < 1000 {
                        continue;
                    }
                }
                if next < n {
                    idle_plans = 0;
                    self.now = self.now.max(self.reqs[next].arrival);
                    continue;
                }
                return Err(SimError::Stalled {
                    policy: name,
                    now: self.now,
                    waiting: self.waiting,
                });
            }
            idle_plans = 0;

            // Price and execute the iteration.
            work.clear();
            for &(i, k) in &scheduled {
                let s = &self.st[i];
                work.batched_tokens += k;
                if s.computed >= s.prompt {
                    work.decode_seqs += 1;
                    work.decode_context_tokens += u64::from(s.computed + 1);
                } else {
                    work.prefill_chunks.push((k, s.computed));
                }
            }
            let dt = cost.iteration_time(&work);
            if !(dt.is_finite() && dt > 0.0) {
                return Err(SimError::Invariant(format!(
                    "cost model returned {dt} s for {work:?}"
                )));
            }
            self.now += dt;
            busy += dt;

            progressed.clear();
            finished.clear();
            for &(i, k) in &scheduled {
                let now = self.now;
                let s = &mut self.st[i];
                let was_prefill = s.computed < s.prompt;
                s.computed += k;
                let new_tokens = u32::from(!was_prefill || s.computed >= s.prompt);
                s.generated += new_tokens;
                let o = &mut self.out[i];
                if new_tokens > 0 && o.first_token.is_none() {
                    o.first_token = Some(now);
                }
                o.generated_tokens = s.generated;
                progressed.push((self.reqs[i].id, if was_prefill { k } else { 0 }, new_tokens));
                if s.generated >= self.reqs[i].output_tokens.max(1) {
                    s.status = Status::Done;
                    self.free_blocks += s.blocks;
                    s.blocks = 0;
                    o.finish = Some(now);
                    finished.push(self.reqs[i].id);
                }
            }
            if !finished.is_empty() {
                let st = &self.st;
                self.running.retain(|&i| st[i].status == Status::Running);
            }
            policy.on_iteration_done(self.now, &progressed, &finished);
            if let Some(p) = progress.as_mut() {
                if it & 511 == 0 {
                    p(self.now);
                }
            }
        }
        Ok(RunResult {
            outcomes: self.out,
            iterations: self.iteration,
            busy_s: busy,
            start_s,
            end_s: self.now,
            peak_blocks_used: peak_blocks,
            peak_running,
        })
    }
}
