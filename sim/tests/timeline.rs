//! Hand-computed timelines with a constant cost model (10 ms per iteration).

mod common;

use common::{ctx_for, req};
use triage_sim::cost::LinearCost;
use triage_sim::engine::{run, EngineConfig, Outcome};
use triage_sim::policies::make_policy;

const STEP: LinearCost = LinearCost {
    fixed_s: 0.01,
    per_token_s: 0.0,
};

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

fn check(o: &Outcome, first_token: f64, finish: f64, preemptions: u32) {
    assert!(
        close(o.first_token, first_token),
        "request {}: first token {:?} != {first_token}",
        o.id,
        o.first_token
    );
    assert!(
        close(o.finish, finish),
        "request {}: finish {:?} != {finish}",
        o.id,
        o.finish
    );
    assert_eq!(o.preemptions, preemptions, "request {} preemptions", o.id);
    assert_eq!(o.generated_tokens, o.output_tokens);
}

fn cfg(budget: u32, total_blocks: u32, block_size: u32) -> EngineConfig {
    EngineConfig {
        max_num_seqs: 4,
        max_num_batched_tokens: budget,
        total_blocks,
        block_size,
        watermark_blocks: 0,
        max_model_len: 4096,
    }
}

/// A (LOW, t=0, prompt 10, out 3), C (MEDIUM, t=4ms, prompt 6, out 1), B (HIGH, t=6ms, prompt 4, out 2);
/// token budget 8 per iteration, plenty of KV.
fn three() -> Vec<triage_sim::policies::SimRequest> {
    vec![
        req(0, 2, 0.0, 10, 3),
        req(2, 1, 0.004, 6, 1),
        req(1, 0, 0.006, 4, 2),
    ]
}

#[test]
fn fcfs_three_requests() {
    // t=0    : start A chunk 8                          -> t=.01 A 8/10
    // t=.01  : run A 2 (first token), start C 6 (prompt done, out 1: finishes), B gets no tokens
    //                                                   -> t=.02 A tok1, C done
    // t=.02  : run A 1, start B 4                       -> t=.03 A tok2, B tok1
    // t=.03  : run A 1, run B 1                         -> t=.04 A done, B done
    let cfg = cfg(8, 1000, 16);
    let mut p = make_policy("fcfs", &ctx_for(&cfg)).unwrap();
    let r = run(&three(), p.as_mut(), &STEP, &cfg, None).unwrap();
    assert_eq!(r.iterations, 4);
    check(&r.outcomes[0], 0.02, 0.04, 0); // A
    check(&r.outcomes[1], 0.02, 0.02, 0); // C
    check(&r.outcomes[2], 0.03, 0.04, 0); // B
    assert!(close(r.outcomes[1].first_start, 0.01));
    assert!(close(r.outcomes[2].first_start, 0.02));
    assert!((r.busy_s - 0.04).abs() < 1e-9 && (r.end_s - 0.04).abs() < 1e-9);
}

#[test]
fn vllm_priority_three_requests() {
    // t=0    : start A chunk 8                          -> t=.01
    // t=.01  : run A 2 first (running first), then heap order: B 4 (HIGH), C 2
    //                                                   -> t=.02 A tok1, B tok1, C 2/6
    // t=.02  : run A 1, B 1, C 4                        -> t=.03 A tok2, B done, C tok1 = done
    // t=.03  : run A 1                                  -> t=.04 A done
    let cfg = cfg(8, 1000, 16);
    let mut p = make_policy("vllm-priority", &ctx_for(&cfg)).unwrap();
    let r = run(&three(), p.as_mut(), &STEP, &cfg, None).unwrap();
    assert_eq!(r.iterations, 4);
    check(&r.outcomes[0], 0.02, 0.04, 0); // A
    check(&r.outcomes[1], 0.03, 0.03, 0); // C
    check(&r.outcomes[2], 0.02, 0.03, 0); // B
}

#[test]
fn fcfs_kv_preemption_recomputes() {
    // block 4 tokens, 4 blocks, budget 16. A (prompt 4, out 4), B (prompt 8, out 2), both at t=0.
    // t=0   : start A (1 block), B (2 blocks); free 1        -> t=.01 both tok1
    // t=.01 : A decode needs block 2 (free 1 -> 0); B needs block 3: none free,
    //         victim = last started = B itself -> preempt B (frees 2), no admissions
    //                                                      -> t=.02 A tok2
    // t=.02 : A decode (fits in its 2 blocks); B must recompute 8+1=9 tokens = 3 blocks > 2 free
    //                                                      -> t=.03 A tok3
    // t=.03 : same                                         -> t=.04 A tok4 = done, frees 2
    // t=.04 : start B chunk 9 (3 blocks), prompt done -> tok2 = done -> t=.05
    let cfg = cfg(16, 4, 4);
    let mut p = make_policy("fcfs", &ctx_for(&cfg)).unwrap();
    let reqs = vec![req(0, 1, 0.0, 4, 4), req(1, 1, 0.0, 8, 2)];
    let r = run(&reqs, p.as_mut(), &STEP, &cfg, None).unwrap();
    assert_eq!(r.iterations, 5);
    check(&r.outcomes[0], 0.01, 0.04, 0);
    check(&r.outcomes[1], 0.01, 0.05, 1);
    // A 2 + B 2 only existed inside the plan; executed states peak at 3 (A 1 + B 2, then B 3).
    assert_eq!(r.peak_blocks_used, 3);
}

#[test]
fn idle_gaps_are_skipped() {
    let cfg = cfg(64, 100, 16);
    let mut p = make_policy("fcfs", &ctx_for(&cfg)).unwrap();
    let reqs = vec![req(0, 0, 1.0, 10, 1), req(1, 0, 5.0, 10, 2)];
    let r = run(&reqs, p.as_mut(), &STEP, &cfg, None).unwrap();
    check(&r.outcomes[0], 1.01, 1.01, 0);
    check(&r.outcomes[1], 5.01, 5.02, 0);
    assert_eq!(r.iterations, 3);
    assert!((r.busy_s - 0.03).abs() < 1e-9);
}
