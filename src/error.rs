//! Every way a call into the scheduler can be refused. Each error names what was wrong and
//! leaves the scheduler's state unchanged.

pub use crate::class::ClassError;
use crate::request::RequestHandle;
use crate::request::RequestId;
pub use crate::time::ClockWentBackwards;
use std::fmt;

/// Why [`crate::Submitter::submit`] refused a request. A refused request has reached its
/// terminal outcome (`refused`) and is counted as such.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The class's ring in this thread's shard, or the class's queue, is full.
    QueueFull {
        /// The class's name.
        class: String,
        /// The capacity that was reached.
        capacity: usize,
    },
    /// A request with this id is still held by the scheduler.
    DuplicateId(RequestId),
    /// The class does not exist.
    Class(ClassError),
    /// `prompt_tokens` is zero.
    ZeroPromptTokens(RequestId),
    /// `max_new_tokens` is zero.
    ZeroMaxNewTokens(RequestId),
    /// `ttft_ms` is zero or longer than [`crate::MAX_TTFT_MS`].
    InvalidTtftTarget {
        /// The request.
        id: RequestId,
        /// The target given, in milliseconds.
        ttft_ms: u32,
    },
    /// Prompt plus output would exceed the model's context length.
    ExceedsContext {
        /// The request.
        id: RequestId,
        /// `prompt_tokens + max_new_tokens`.
        tokens: u64,
        /// The model's context length.
        max_model_len: u32,
    },
    /// The request needs more KV blocks than the engine has (less the watermark), so it
    /// could never run.
    NeverFits {
        /// The request.
        id: RequestId,
        /// Blocks it needs at its full length.
        blocks_needed: u64,
        /// Blocks the engine can ever give one request.
        blocks_available: u32,
    },
    /// The scheduler was closed (shutdown or hand-off); submit to another replica.
    Closed,
    /// The engine thread panicked; the scheduler takes no more requests.
    EngineGone,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::QueueFull { class, capacity } => {
                write!(f, "queue full for class {class} (capacity {capacity})")
            }
            SubmitError::DuplicateId(id) => write!(f, "duplicate request id {id}"),
            SubmitError::Class(e) => write!(f, "{e}"),
            SubmitError::ZeroPromptTokens(id) => write!(f, "{id}: prompt_tokens must be at least 1"),
            SubmitError::ZeroMaxNewTokens(id) => {
                write!(f, "{id}: max_new_tokens must be at least 1")
            }
            SubmitError::InvalidTtftTarget { id, ttft_ms } => write!(
                f,
                "{id}: ttft_ms must be 1 to {} milliseconds, not {ttft_ms}",
                crate::request::MAX_TTFT_MS
            ),
            SubmitError::ExceedsContext {
                id,
                tokens,
                max_model_len,
            } => write!(
                f,
                "{id}: prompt + max_new_tokens = {tokens} exceeds the model context (max_model_len {max_model_len})"
            ),
            SubmitError::NeverFits {
                id,
                blocks_needed,
                blocks_available,
            } => write!(
                f,
                "{id}: needs {blocks_needed} KV blocks but the engine can give at most {blocks_available}"
            ),
            SubmitError::Closed => write!(f, "scheduler is closed"),
            SubmitError::EngineGone => write!(f, "engine thread panicked; scheduler unavailable"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// Why a cancel, reprioritize or id look-up was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// The handle names no request the scheduler holds: the request ended (its handle is
    /// stale) or the handle never came from this scheduler.
    NotFound(RequestHandle),
    /// The request has already been cancelled.
    AlreadyCancelled(RequestHandle),
    /// The target class does not exist.
    Class(ClassError),
    /// [`crate::Submitter::lookup`]: no held request has this id.
    UnknownId(RequestId),
    /// [`crate::Submitter::lookup`] needs `id_index = true` in the configuration.
    NoIdIndex,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::NotFound(h) => {
                write!(
                    f,
                    "{h} names no request the scheduler holds (ended, or not ours)"
                )
            }
            ControlError::AlreadyCancelled(h) => write!(f, "{h} is already cancelled"),
            ControlError::Class(e) => write!(f, "{e}"),
            ControlError::UnknownId(id) => write!(f, "{id} is not held by the scheduler"),
            ControlError::NoIdIndex => write!(
                f,
                "look-up by id needs the id index: set `id_index = true` in the configuration"
            ),
        }
    }
}

impl std::error::Error for ControlError {}

/// Why an engine callback (progress or finish) was refused. A refused report changes
/// nothing.
///
/// ```
/// use triage::*;
/// let clock = ManualClock::new(Timestamp::ZERO);
/// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
/// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
/// let waiting = api.submit(RequestSpec::new(1, Class::LOW, 100, 4)).unwrap();
/// let no_room = Budget { max_num_seqs: 0, ..room };
/// sched.step(clock.now(), &no_room).unwrap();
/// // Waiting, not running.
/// assert_eq!(sched.on_progress(waiting, clock.now(), 1, 0), Err(ProgressError::NotRunning(waiting)));
/// let a = sched.step(clock.now(), &room).unwrap().admitted[0];
/// // More prompt than it has, or output before its prefill is computed.
/// assert!(matches!(sched.on_progress(a.handle, clock.now(), 101, 0), Err(ProgressError::PrefillOverrun { .. })));
/// assert!(matches!(sched.on_progress(a.handle, clock.now(), 50, 1), Err(ProgressError::OutputOverrun { .. })));
/// sched.on_progress(a.handle, clock.now(), 100, 1).unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressError {
    /// The handle names no running request (it is waiting, ended, or not ours).
    NotRunning(RequestHandle),
    /// More prompt tokens reported computed than the request has left to prefill.
    PrefillOverrun {
        /// The request.
        id: RequestId,
        /// Tokens reported.
        reported: u32,
        /// Tokens it had left to prefill.
        remaining: u32,
    },
    /// Output tokens reported before its prefill completed, or past `max_new_tokens`.
    OutputOverrun {
        /// The request.
        id: RequestId,
        /// Output tokens it would have.
        generated: u64,
        /// The most it may have.
        max_new_tokens: u32,
    },
    /// A timestamp earlier than the request's previous event.
    TimeWentBackwards(RequestId),
}

impl fmt::Display for ProgressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgressError::NotRunning(h) => write!(f, "{h} names no running request"),
            ProgressError::PrefillOverrun {
                id,
                reported,
                remaining,
            } => write!(
                f,
                "{id}: {reported} prompt tokens reported computed but only {remaining} remained"
            ),
            ProgressError::OutputOverrun {
                id,
                generated,
                max_new_tokens,
            } => write!(
                f,
                "{id}: {generated} output tokens is more than allowed ({max_new_tokens}) or came before the prefill finished"
            ),
            ProgressError::TimeWentBackwards(id) => {
                write!(f, "{id}: event time is earlier than its previous event")
            }
        }
    }
}

impl std::error::Error for ProgressError {}

/// Why a step's budget was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetError {
    /// More free KV blocks than the engine has in total.
    FreeBlocksExceedTotal {
        /// Free blocks reported.
        free: u32,
        /// The engine's total from the config.
        total: u32,
    },
    /// `now` is earlier than the previous step's.
    TimeWentBackwards {
        /// This step's time (ns).
        now: u64,
        /// The previous step's time (ns).
        previous: u64,
    },
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetError::FreeBlocksExceedTotal { free, total } => write!(
                f,
                "budget reports {free} free KV blocks but the engine has only {total}"
            ),
            BudgetError::TimeWentBackwards { now, previous } => write!(
                f,
                "step time {now}ns is earlier than the previous step's {previous}ns"
            ),
        }
    }
}

impl std::error::Error for BudgetError {}

/// Why a configuration reload was refused. The configuration in force stays, unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadError {
    /// The new configuration breaks a rule.
    Invalid(ConfigError),
    /// It removes a class that still holds requests.
    StrandsRequests {
        /// The class's name.
        class: String,
        /// Its waiting requests.
        waiting: usize,
        /// Its running requests.
        running: usize,
    },
    /// It changes something fixed at start (shard count, an existing ring's capacity).
    NeedsRestart {
        /// The field.
        field: String,
        /// The value in force.
        current: String,
        /// The value asked for.
        requested: String,
    },
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Invalid(e) => write!(f, "{e}"),
            ReloadError::StrandsRequests {
                class,
                waiting,
                running,
            } => write!(
                f,
                "reload would remove class {class}, which still holds {waiting} waiting and {running} running requests"
            ),
            ReloadError::NeedsRestart {
                field,
                current,
                requested,
            } => write!(
                f,
                "`{field}` is fixed at start ({current}); changing it to {requested} needs a restart"
            ),
        }
    }
}

impl std::error::Error for ReloadError {}

/// A configuration value that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, as a dotted path (`classes[2].promote_after_ms`).
    pub field: String,
    /// What is allowed there.
    pub expected: String,
    /// What was found.
    pub found: String,
    /// Where in the TOML text, when the config came from one: 1-based line and column.
    pub location: Option<(u32, u32)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.location {
            write!(f, "line {line}, column {column}: ")?;
        }
        write!(
            f,
            "invalid config field `{}`: expected {}, found {}",
            self.field, self.expected, self.found
        )
    }
}

impl std::error::Error for ConfigError {}

/// A configuration error for `field` (no location yet: the TOML loader adds it).
pub(crate) fn err(
    field: impl Into<String>,
    expected: impl Into<String>,
    found: impl ToString,
) -> ConfigError {
    ConfigError {
        field: field.into(),
        expected: expected.into(),
        found: found.to_string(),
        location: None,
    }
}
