//! Random sequences of every public API call (submit, cancel, reprioritize, step, progress,
//! finish, look-up, reload, close, `drain_waiting`) against one scheduler, with class queue
//! capacities from 1 upward, the id index on or off, and one or two shards.
//!
//! The target plays the API threads and the engine, and keeps its own account of every
//! accepted request (its handle, its base class, waiting or running, cancel acknowledged or
//! not), fed only by what the API answers and what the decisions say. Calls name requests
//! by the handle their submit returned; the handle of an ended request is kept (one per id)
//! to call with again: it must be stale. After every call it checks:
//! * `check_invariants()` and the conservation law;
//! * the scheduler's counts against the account: submitted, held (in ingress + waiting +
//!   running) and each terminal outcome;
//! * each answer against the account: a submit accepted only if its class had room (its
//!   `queue_capacity` against the requests waiting in that base class as of the last step
//!   plus those submitted to it since) and refused `QueueFull` only if not; with the id
//!   index, accepted only for an id not held and refused as a duplicate only for a held one
//!   (without it the target submits no held id: the decision lists name requests by id);
//!   a new handle never one already issued; cancel's `WasWaiting`/`WasRunning` matching the
//!   state; admissions only of waiting requests, with the handle their submit returned
//!   (kept across preemptions) and their arrival, scheduled work with it too, preemptions
//!   only of running ones, aborts and cancellations only after an acknowledged cancel;
//!   progress and finish accepted for every running request, refused `NotRunning` for a
//!   waiting one; a stale handle answering `NotFound` / `NotRunning`;
//! * `lookup` of every id: the held request's handle, or `UnknownId` (`NoIdIndex` without
//!   the index);
//! * after `drain_waiting`: nothing waiting and nothing in ingress; every waiting request
//!   was handed off, or ended as the cancel the client was told about.
//!
//! At the end it closes, hands off, lets the engine finish everything, and checks that
//! every accepted request had exactly one terminal outcome, reported to someone.
//!
//! Submits go through two worker threads, one per shard (each thread keeps the shard of its
//! first submit), called one at a time, so a run is deterministic.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use triage::*;

#[derive(Arbitrary, Debug)]
struct Setup {
    /// `id_index`: look-up by id, and duplicate ids refused.
    id_index: bool,
    two_shards: bool,
    /// Queue capacity per class: `1 + queue_capacity % 8`, or large.
    queue_capacity: Option<u8>,
    preempt: bool,
    chunked: bool,
    lookahead: u8,
    aging: bool,
    queue_timeout: bool,
    /// Fairness on, with `1 + max_tenants % 3` tenants held at most.
    fair: Option<u8>,
    block_size_16: bool,
    total_blocks: u8,
    /// SLO tracking on (its histograms make a scheduler slow to build, so one run in
    /// eight).
    slo: u8,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Submit {
        id: u8,
        class: u8,
        prompt: u16,
        max_new: u8,
        tenant: u8,
        worker: bool,
    },
    Cancel {
        id: u8,
    },
    Reprioritize {
        id: u8,
        class: u8,
    },
    Step {
        advance_ms: u8,
        seqs: u8,
        tokens: u16,
        free: u16,
    },
    BadStep {
        back: bool,
    },
    Advance {
        ms: u16,
    },
    Progress {
        pick: u8,
        computed: u16,
        output: u8,
    },
    Finish {
        pick: u8,
        reason: u8,
    },
    FinishUnknown {
        id: u8,
    },
    Reload {
        kind: u8,
    },
    Close,
    DrainWaiting,
}

fuzz_target!(|input: (Setup, Vec<Op>)| {
    let (setup, ops) = input;
    let mut world = World::new(&setup);
    for op in ops.iter().take(400) {
        world.apply(op);
        world.verify();
    }
    world.finish();
});

type Job = (Submitter, RequestSpec);
type Reply = Result<RequestHandle, SubmitError>;

/// A thread that submits on the main thread's behalf and answers before the next call.
struct Worker {
    jobs: Sender<Job>,
    replies: Receiver<Reply>,
}

impl Worker {
    fn spawn() -> Worker {
        let (jobs, job_rx) = channel::<Job>();
        let (reply_tx, replies) = channel();
        std::thread::spawn(move || {
            for (api, spec) in job_rx {
                if reply_tx.send(api.submit(spec)).is_err() {
                    return;
                }
            }
        });
        Worker { jobs, replies }
    }

    fn submit(&self, api: &Submitter, spec: RequestSpec) -> Reply {
        self.jobs.send((api.clone(), spec)).expect("worker alive");
        self.replies.recv().expect("worker answered")
    }
}

/// The two workers. Each submits once to a throwaway scheduler first, in order, so they
/// take consecutive shard seeds and so different shards of a two-shard scheduler.
fn workers() -> &'static [Mutex<Worker>; 2] {
    static WORKERS: OnceLock<[Mutex<Worker>; 2]> = OnceLock::new();
    WORKERS.get_or_init(|| {
        let w = [Worker::spawn(), Worker::spawn()];
        let (_s, api) = Scheduler::with_clock(SchedulerConfig::default(), ManualClock::default())
            .expect("default config");
        for (i, w) in w.iter().enumerate() {
            let _ = w.submit(&api, RequestSpec::new(i as u64, Class::HIGH, 1, 1));
        }
        w.map(Mutex::new)
    })
}

/// The account of one accepted request.
#[derive(Clone, Copy, Debug)]
struct Held {
    /// What its submit returned.
    handle: RequestHandle,
    /// The clock's time at its submit.
    arrival: Timestamp,
    /// Its base class as the class's queue capacity counts it: as of the last step (the
    /// submitted class if submitted since).
    class: u8,
    /// A class change acknowledged since the last step, which the next step applies.
    class_next: Option<u8>,
    running: bool,
    cancel_acked: bool,
}

/// Terminal outcomes the target saw reported, by kind.
#[derive(Default, Debug)]
struct Seen {
    finished: u64,
    cancelled: u64,
    timed_out: u64,
    evicted: u64,
    /// Shed by deadline order (`RejectReason::DeadlineMissed`).
    shed: u64,
    refused_drained: u64,
}

struct World {
    sched: Scheduler,
    api: Submitter,
    clock: ManualClock,
    base: SchedulerConfig,
    held: BTreeMap<u64, Held>,
    /// The handle of the last ended request of each id.
    stale: BTreeMap<u64, RequestHandle>,
    accepted: u64,
    refused_at_submit: u64,
    seen: Seen,
    now_floor: Timestamp,
}

fn config(s: &Setup) -> SchedulerConfig {
    let mut c = SchedulerConfig {
        shards: if s.two_shards { 2 } else { 1 },
        id_index: s.id_index,
        ..SchedulerConfig::default()
    };
    for class in &mut c.classes {
        class.queue_capacity = s.queue_capacity.map_or(1 << 16, |q| 1 + usize::from(q % 8));
    }
    if s.aging {
        c.classes[1].promote_after_ms = Some(60);
        c.classes[2].promote_after_ms = Some(30);
        c.max_wait_ms = 200;
    } else {
        c.classes[1].promote_after_ms = None;
        c.classes[2].promote_after_ms = None;
        c.max_wait_ms = 500;
    }
    c.bucket_width_ms = 10;
    c.queue_timeout_ms = s.queue_timeout.then_some(c.max_wait_ms + 100);
    c.preemption.enabled = s.preempt;
    c.backfill_lookahead = usize::from(s.lookahead % 4);
    c.chunked_prefill = s.chunked;
    c.engine.block_size = if s.block_size_16 { 16 } else { 4 };
    c.engine.total_blocks = 16 + u32::from(s.total_blocks);
    c.engine.max_model_len = 256;
    c.engine.watermark = 0.0;
    c.slo.enabled = s.slo.is_multiple_of(8);
    if let Some(t) = s.fair {
        c.fairness.enabled = true;
        c.fairness.max_tenants = 1 + usize::from(t % 3);
    }
    c
}

impl World {
    fn new(setup: &Setup) -> World {
        let base = config(setup);
        let clock = ManualClock::new(Timestamp::ZERO);
        let (sched, api) =
            Scheduler::with_clock(base.clone(), clock.clone()).expect("the config is valid");
        World {
            sched,
            api,
            clock,
            base,
            held: BTreeMap::new(),
            stale: BTreeMap::new(),
            accepted: 0,
            refused_at_submit: 0,
            seen: Seen::default(),
            now_floor: Timestamp::ZERO,
        }
    }

    fn running(&self) -> Vec<u64> {
        self.held
            .iter()
            .filter(|(_, h)| h.running)
            .map(|(&id, _)| id)
            .collect()
    }

    fn pick_running(&self, pick: u8) -> Option<u64> {
        let r = self.running();
        (!r.is_empty()).then(|| r[usize::from(pick) % r.len()])
    }

    fn end(&mut self, id: u64, what: &str) -> Held {
        let h = self
            .held
            .remove(&id)
            .unwrap_or_else(|| panic!("{what} of req {id}, which is not held"));
        self.stale.insert(id, h.handle);
        h
    }

    /// The handle to call `id`'s request by: the held one's, else the last ended one's
    /// (stale); `None` if the id was never accepted.
    fn handle_of(&self, id: u64) -> Option<RequestHandle> {
        self.held
            .get(&id)
            .map(|h| h.handle)
            .or_else(|| self.stale.get(&id).copied())
    }

    /// Requests counting against class `class`'s queue capacity: waiting in it as of the
    /// last step, or submitted to it since.
    fn queued(&self, class: u8) -> usize {
        self.held
            .values()
            .filter(|h| !h.running && h.class == class)
            .count()
    }

    /// The configured queue capacity of class `class`.
    fn capacity(&self, class: u8) -> usize {
        self.base.classes[usize::from(class)].queue_capacity
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Submit {
                id,
                class,
                prompt,
                max_new,
                tenant,
                worker,
            } => {
                let id = u64::from(id % 24);
                let class = if class < 240 { class % 3 } else { class };
                let mut spec = RequestSpec::new(
                    id,
                    Class::from_index(class),
                    u32::from(prompt % 300),
                    u32::from(max_new % 40),
                );
                if tenant % 5 != 0 {
                    spec = spec.with_tenant(TenantId(u64::from(tenant % 5)));
                }
                let held = self.held.contains_key(&id);
                if held && !self.base.id_index {
                    // Accepted without the index (ids are the engine's business), but then
                    // two held requests would share the id that preemptions, cancellations
                    // and rejections name them by, and the account could not tell them
                    // apart.
                    return;
                }
                // Classes past the configured ones are refused before the capacity counts.
                let room = (class < 3).then(|| (self.queued(class), self.capacity(class)));
                let arrival = self.clock.now();
                let w = workers()[usize::from(worker)].lock().unwrap();
                match w.submit(&self.api, spec) {
                    Ok(handle) => {
                        if let Some((queued, cap)) = room {
                            assert!(
                                queued < cap,
                                "req {id} accepted into a full class ({queued} of {cap})"
                            );
                        }
                        assert!(
                            self.held.values().all(|h| h.handle != handle)
                                && self.stale.values().all(|&s| s != handle),
                            "req {id}: {handle} issued before"
                        );
                        let before = self.held.insert(
                            id,
                            Held {
                                handle,
                                arrival,
                                class,
                                class_next: None,
                                running: false,
                                cancel_acked: false,
                            },
                        );
                        assert!(before.is_none(), "req {id} accepted while held");
                        self.accepted += 1;
                    }
                    Err(e) => {
                        match e {
                            SubmitError::DuplicateId(_) => {
                                assert!(self.base.id_index, "duplicate of {id} without the index");
                                assert!(held, "duplicate of unheld {id}");
                                let (queued, cap) = room.expect("a configured class");
                                assert!(queued < cap, "duplicate checked in a full class");
                            }
                            SubmitError::QueueFull { capacity, .. } => {
                                let (queued, cap) = room.expect("QueueFull of a configured class");
                                assert_eq!(capacity, cap, "req {id}");
                                assert!(
                                    queued >= cap,
                                    "req {id} refused with room ({queued} of {cap})"
                                );
                            }
                            _ => {}
                        }
                        self.refused_at_submit += 1;
                    }
                }
            }
            Op::Cancel { id } => {
                let id = u64::from(id % 24);
                let Some(handle) = self.handle_of(id) else {
                    return;
                };
                let held = self.held.get_mut(&id);
                match (self.api.cancel(handle), held) {
                    (Ok(outcome), Some(h)) => {
                        assert!(!h.cancel_acked, "req {id} cancelled twice");
                        let expected = if h.running {
                            CancelOutcome::WasRunning
                        } else {
                            CancelOutcome::WasWaiting
                        };
                        assert_eq!(outcome, expected, "req {id}");
                        h.cancel_acked = true;
                    }
                    (Err(ControlError::AlreadyCancelled(named)), Some(h)) => {
                        assert_eq!(named, handle);
                        assert!(
                            h.cancel_acked,
                            "req {id}: AlreadyCancelled but not cancelled"
                        )
                    }
                    (Err(ControlError::NotFound(named)), None) => assert_eq!(named, handle),
                    (r, h) => panic!("cancel of req {id} by {handle} ({h:?}): {r:?}"),
                }
            }
            Op::Reprioritize { id, class } => {
                let id = u64::from(id % 24);
                let class = if class < 240 { class % 3 } else { class };
                let Some(handle) = self.handle_of(id) else {
                    return;
                };
                let r = self.api.reprioritize(handle, Class::from_index(class));
                match (r, self.held.get_mut(&id)) {
                    (Ok(()), Some(h)) => {
                        assert!(!h.cancel_acked);
                        assert!(class < 3, "req {id} moved to class {class}");
                        h.class_next = Some(class);
                    }
                    (Err(ControlError::AlreadyCancelled(named)), Some(h)) => {
                        assert_eq!(named, handle);
                        assert!(h.cancel_acked)
                    }
                    (Err(ControlError::NotFound(named)), None) => assert_eq!(named, handle),
                    (Err(ControlError::Class(_)), _) => assert!(class >= 3),
                    (r, h) => panic!("reprioritize of req {id} by {handle} ({h:?}): {r:?}"),
                }
            }
            Op::Step {
                advance_ms,
                seqs,
                tokens,
                free,
            } => {
                self.clock
                    .advance(Duration::from_millis(u64::from(advance_ms % 64)));
                let total = self.sched.config().engine.total_blocks;
                let budget = Budget {
                    max_num_seqs: u32::from(seqs % 8),
                    max_batched_tokens: u32::from(tokens % 1024),
                    free_blocks: u32::from(free) % (total + 1),
                };
                self.step(&budget);
            }
            Op::BadStep { back } => {
                let total = self.sched.config().engine.total_blocks;
                let before = self.sched.conservation();
                let r = if back && self.now_floor.0 > 0 {
                    let then = Timestamp(self.now_floor.0 - 1);
                    self.sched.step(then, &budget(total))
                } else {
                    self.sched.step(self.clock.now(), &budget(total + 1))
                };
                assert!(r.is_err(), "an impossible step was taken");
                assert_eq!(self.sched.conservation(), before);
            }
            Op::Advance { ms } => self.clock.advance(Duration::from_millis(u64::from(ms))),
            Op::Progress {
                pick,
                computed,
                output,
            } => {
                let Some(id) = self.pick_running(pick) else {
                    return;
                };
                let handle = self.held[&id].handle;
                let output = u32::from(output % 4);
                let r = self.sched.on_progress(
                    handle,
                    self.clock.now(),
                    u32::from(computed % 300),
                    output,
                );
                match r {
                    Ok(()) => {
                        if output > 0 {
                            assert!(self.sched.first_token_at(handle).is_some(), "req {id}");
                        }
                    }
                    Err(ProgressError::PrefillOverrun { .. })
                    | Err(ProgressError::OutputOverrun { .. }) => {}
                    Err(e) => panic!("progress of running req {id}: {e}"),
                }
            }
            Op::Finish { pick, reason } => {
                let Some(id) = self.pick_running(pick) else {
                    return;
                };
                let reason = match reason % 3 {
                    0 => FinishReason::Stop,
                    1 => FinishReason::Length,
                    _ => FinishReason::Error,
                };
                let handle = self.held[&id].handle;
                let outcome = self
                    .sched
                    .on_finished(handle, self.clock.now(), reason)
                    .unwrap_or_else(|e| panic!("finish of running req {id}: {e}"));
                let h = self.end(id, "finish");
                self.count_finish(id, h, outcome);
            }
            Op::FinishUnknown { id } => {
                // A waiting request's handle, or a stale one: it names no running request.
                let id = u64::from(id % 24);
                let handle = match self.held.get(&id) {
                    Some(h) if h.running => return,
                    Some(h) => h.handle,
                    None => match self.stale.get(&id) {
                        Some(&h) => {
                            assert_eq!(self.sched.first_token_at(h), None, "stale {h}");
                            h
                        }
                        None => return,
                    },
                };
                let now = self.clock.now();
                let r = self.sched.on_progress(handle, now, 1, 0);
                assert_eq!(r, Err(ProgressError::NotRunning(handle)));
                let r = self.sched.on_finished(handle, now, FinishReason::Stop);
                assert_eq!(r, Err(ProgressError::NotRunning(handle)));
            }
            Op::Reload { kind } => {
                let mut c = self.base.clone();
                match kind % 4 {
                    0 => {}
                    1 => {
                        c.preemption.enabled = !c.preemption.enabled;
                        c.chunked_prefill = !c.chunked_prefill;
                        c.backfill_lookahead = (c.backfill_lookahead + 1) % 4;
                        c.fairness.enabled = !c.fairness.enabled;
                    }
                    2 => {
                        // The id index is fixed at start: refused when applied.
                        c.id_index = !c.id_index;
                    }
                    _ => {
                        // Below the smallest ring: refused at once, naming the field.
                        c.classes[1].ring_capacity = ClassConfig::MIN_RING_CAPACITY - 1;
                        let e = self.sched.reload(c).expect_err("a ring below the minimum");
                        assert_eq!(e.field, "classes[1].ring_capacity");
                        return;
                    }
                }
                self.sched.reload(c).expect("a valid config is proposed");
            }
            Op::Close => self.api.close(),
            Op::DrainWaiting => self.drain_waiting(),
        }
    }

    fn count_finish(&mut self, id: u64, h: Held, outcome: Outcome) {
        match outcome {
            Outcome::Finished => {
                assert!(
                    !h.cancel_acked,
                    "req {id}: cancel acknowledged, yet finished"
                );
                self.seen.finished += 1;
            }
            Outcome::Cancelled => {
                assert!(
                    h.cancel_acked,
                    "req {id}: cancelled with no cancel acknowledged"
                );
                self.seen.cancelled += 1;
            }
            o => panic!("finish of req {id} counted {o:?}"),
        }
    }

    fn step(&mut self, budget: &Budget) {
        let now = self.clock.now();
        let d = self
            .sched
            .step(now, budget)
            .unwrap_or_else(|e| panic!("a valid step was refused: {e}"));
        self.now_floor = now;
        // The step applied the class changes acknowledged before it.
        for h in self.held.values_mut() {
            if let Some(c) = h.class_next.take() {
                h.class = c;
            }
        }
        for &id in &d.aborted {
            let h = self.end(id.0, "abort");
            assert!(h.running && h.cancel_acked, "aborted {id} was {h:?}");
            self.seen.cancelled += 1;
        }
        for &id in &d.cancelled {
            let h = self.end(id.0, "cancellation");
            assert!(!h.running && h.cancel_acked, "cancelled {id} was {h:?}");
            self.seen.cancelled += 1;
        }
        for r in &d.rejected {
            let h = self.end(r.id.0, "rejection");
            assert!(!h.running, "rejected {} was running", r.id);
            assert!(!h.cancel_acked, "rejected {} after its cancel", r.id);
            match r.reason {
                RejectReason::TimedOut { .. } => self.seen.timed_out += 1,
                RejectReason::DeadlineMissed { .. } => self.seen.shed += 1,
                RejectReason::TenantLimit { .. } => self.seen.refused_drained += 1,
            }
        }
        for p in &d.preempted {
            let h = self.held.get_mut(&p.id.0).expect("preempted req is held");
            assert!(h.running, "preempted {} was not running", p.id);
            h.running = false;
        }
        for a in &d.admitted {
            let h = self.held.get_mut(&a.id.0).expect("admitted req is held");
            assert!(!h.running, "admitted {} was running", a.id);
            assert!(!h.cancel_acked, "admitted {} after its cancel", a.id);
            assert_eq!(a.handle, h.handle, "admitted {}", a.id);
            assert_eq!(a.arrival, h.arrival, "admitted {}", a.id);
            h.running = true;
        }
        for s in &d.scheduled {
            let h = self.held.get(&s.id.0);
            assert!(
                h.is_some_and(|h| h.running && h.handle == s.handle),
                "scheduled {s:?}: {h:?}"
            );
        }
    }

    /// Hands off: every waiting request comes back, or ended as the cancel its client was
    /// told of; nothing is left waiting or in ingress.
    fn drain_waiting(&mut self) {
        let handed = self.sched.drain_waiting(self.clock.now());
        for h in &handed {
            let held = self.end(h.spec.id.0, "hand-off");
            assert!(!held.running, "handed off running req {}", h.spec.id);
            assert!(!held.cancel_acked, "handed off cancelled req {}", h.spec.id);
            self.seen.evicted += 1;
        }
        let waiting: Vec<(u64, Held)> = self
            .held
            .iter()
            .filter(|(_, h)| !h.running)
            .map(|(&id, &h)| (id, h))
            .collect();
        for (id, h) in waiting {
            assert!(
                h.cancel_acked,
                "req {id} was waiting or in ingress, and drain_waiting neither handed it off \
                 nor ended it as cancelled ({})",
                self.sched.conservation()
            );
            self.held.remove(&id);
            self.seen.cancelled += 1;
        }
        let c = self.sched.conservation();
        assert_eq!(
            (c.in_ingress, c.waiting),
            (0, 0),
            "after drain_waiting: {c}"
        );
        assert!(matches!(
            workers()[0]
                .lock()
                .unwrap()
                .submit(&self.api, RequestSpec::new(1000, Class::HIGH, 1, 1)),
            Err(SubmitError::Closed)
        ));
        self.refused_at_submit += 1;
    }

    fn verify(&self) {
        if let Err(e) = self.sched.check_invariants() {
            panic!("check_invariants: {e}");
        }
        for id in 0..24 {
            let r = self.api.lookup(RequestId(id));
            let expected = match self.held.get(&id) {
                _ if !self.base.id_index => Err(ControlError::NoIdIndex),
                Some(h) => Ok(h.handle),
                None => Err(ControlError::UnknownId(RequestId(id))),
            };
            assert_eq!(r, expected, "lookup of req {id}");
        }
        let c = self.sched.conservation();
        assert!(c.is_balanced(), "{c}");
        assert_eq!(c.submitted, self.accepted + self.refused_at_submit, "{c}");
        assert_eq!(
            c.in_ingress + c.waiting + c.running,
            self.held.len() as u64,
            "held by the account: {:?}; {c}",
            self.held
        );
        assert_eq!(
            c.running,
            self.held.values().filter(|h| h.running).count() as u64,
            "{c}"
        );
        let s = &self.seen;
        assert_eq!(
            (c.finished, c.cancelled, c.timed_out, c.evicted, c.shed),
            (s.finished, s.cancelled, s.timed_out, s.evicted, s.shed),
            "outcomes counted / reported: {c} / {s:?}"
        );
        assert_eq!(
            c.refused,
            self.refused_at_submit + s.refused_drained,
            "{c} / {s:?}"
        );
    }

    /// Closes, hands off, and lets the engine finish the rest: every accepted request has
    /// exactly one terminal outcome and nothing is held anywhere.
    fn finish(mut self) {
        self.api.close();
        self.drain_waiting();
        self.verify();
        let total = self.sched.config().engine.total_blocks;
        let room = Budget {
            max_num_seqs: 1 << 10,
            max_batched_tokens: 1 << 20,
            free_blocks: total,
        };
        // Aborts of cancelled running requests come with the next decision. A step may
        // also preempt (the budget of the last random step may have been smaller than
        // what runs), sending a request back to the queue: the step with room admits it
        // again, or a second hand-off takes it.
        for round in 0.. {
            self.step(&room);
            self.verify();
            for id in self.running() {
                let handle = self.held[&id].handle;
                let outcome = self
                    .sched
                    .on_finished(handle, self.clock.now(), FinishReason::Stop)
                    .unwrap_or_else(|e| panic!("finish of running req {id}: {e}"));
                let h = self.end(id, "finish");
                self.count_finish(id, h, outcome);
            }
            self.verify();
            if self.held.is_empty() {
                break;
            }
            assert!(
                round < 2,
                "still held after {round} rounds: {:?}",
                self.held
            );
            self.drain_waiting();
        }
        self.step(&budget(0));
        self.verify();
        assert!(self.held.is_empty(), "still held: {:?}", self.held);
        let c = self.sched.conservation();
        assert_eq!((c.in_ingress, c.waiting, c.running), (0, 0, 0), "{c}");
        let s = &self.seen;
        assert_eq!(
            s.finished + s.cancelled + s.timed_out + s.evicted + s.shed + s.refused_drained,
            self.accepted,
            "every accepted request has one outcome: {s:?}"
        );
    }
}

fn budget(free_blocks: u32) -> Budget {
    Budget {
        max_num_seqs: 0,
        max_batched_tokens: 0,
        free_blocks,
    }
}
