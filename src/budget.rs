//! What the engine can give one iteration.

/// The engine's limits for one iteration, passed to every [`crate::Scheduler::step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most requests running at once (vLLM's `max_num_seqs`).
    pub max_num_seqs: u32,
    /// Tokens the iteration may process: prefill chunks plus one per decoding request
    /// (vLLM's `max_num_batched_tokens`).
    pub max_batched_tokens: u32,
    /// KV-cache blocks free right now, as the engine's block manager reports them. Block
    /// size and watermark are engine constants from [`crate::EngineLimits`].
    pub free_blocks: u32,
}

/// Which budget stopped a request from starting or forced a preemption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Short {
    /// `max_num_seqs` reached.
    Seqs,
    /// The iteration's token budget is used up.
    Tokens,
    /// Not enough free KV blocks (above the watermark, for admissions).
    KvBlocks,
}

impl Short {
    /// A stable lower-case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Short::Seqs => "seqs",
            Short::Tokens => "tokens",
            Short::KvBlocks => "kv_blocks",
        }
    }
}
