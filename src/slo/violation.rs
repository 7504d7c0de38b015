//! SLO violation reports and where they go: a `tracing` warn event, a per class and kind
//! counter, and every subscriber's bounded channel (never blocking: a full channel drops
//! the report and counts the drop).

use crate::class::Class;
use crate::request::RequestId;
use crate::time::Timestamp;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::fmt;
use std::time::Duration;

/// Which target a request missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// Time to first token.
    Ttft,
    /// Time per output token (the request's mean gap between output tokens).
    Tpot,
    /// End to end, arrival to finish.
    EndToEnd,
}

impl ViolationKind {
    /// Every kind, in index order.
    pub const ALL: [ViolationKind; 3] = [
        ViolationKind::Ttft,
        ViolationKind::Tpot,
        ViolationKind::EndToEnd,
    ];

    /// A stable lower-case name, for logs and metric labels: `ttft`, `tpot`, `e2e`.
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::Ttft => "ttft",
            ViolationKind::Tpot => "tpot",
            ViolationKind::EndToEnd => "e2e",
        }
    }

    /// A dense index (0, 1, 2 in the order of [`ViolationKind::ALL`]).
    pub fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that missed one of its class's targets, reported the moment it is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The request.
    pub id: RequestId,
    /// Its class when the miss was reported.
    pub class: Class,
    /// Which target.
    pub kind: ViolationKind,
    /// The target's bound.
    pub bound: Duration,
    /// What was observed: the latency so far for a request still waiting for its first
    /// token or its finish, the final latency otherwise; for TPOT the mean gap.
    pub observed: Duration,
    /// Whether the request was waiting in the queue (never admitted, or preempted) when
    /// the miss was reported.
    pub while_queued: bool,
    /// When it was reported.
    pub at: Timestamp,
}

/// Sends each report to the log, the counters and the subscribers.
#[derive(Debug)]
pub(crate) struct Reporter {
    class_names: Vec<String>,
    /// `[class][kind]` reports.
    counts: Vec<[u64; 3]>,
    dropped: u64,
    subscribers: Vec<Sender<Violation>>,
}

impl Reporter {
    pub(crate) fn new(class_names: Vec<String>) -> Self {
        Self {
            counts: vec![[0; 3]; class_names.len()],
            class_names,
            dropped: 0,
            subscribers: Vec::new(),
        }
    }

    pub(crate) fn subscribe(&mut self, capacity: usize) -> Receiver<Violation> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        self.subscribers.push(tx);
        rx
    }

    pub(crate) fn emit(&mut self, v: Violation) {
        let name = self
            .class_names
            .get(v.class.index())
            .map_or("<unknown>", String::as_str);
        tracing::warn!(
            target: "triage::slo",
            id = v.id.0,
            class = name,
            kind = v.kind.as_str(),
            bound_ms = v.bound.as_secs_f64() * 1e3,
            observed_ms = v.observed.as_secs_f64() * 1e3,
            while_queued = v.while_queued,
            at_ns = v.at.0,
            "SLO violation"
        );
        if let Some(c) = self.counts.get_mut(v.class.index()) {
            c[v.kind.index()] += 1;
        }
        let mut i = 0;
        while i < self.subscribers.len() {
            match self.subscribers[i].try_send(v) {
                Ok(()) => i += 1,
                Err(TrySendError::Full(_)) => {
                    self.dropped += 1;
                    i += 1;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.subscribers.swap_remove(i);
                }
            }
        }
    }

    pub(crate) fn count(&self, class: Class, kind: ViolationKind) -> u64 {
        self.counts
            .get(class.index())
            .map_or(0, |c| c[kind.index()])
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    pub(crate) fn subscribers(&self) -> usize {
        self.subscribers.len()
    }
}
