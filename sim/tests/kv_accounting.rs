//! KV blocks are never negative nor above capacity over whole replays, including
//! under heavy preemption, and every request finishes with all its tokens.

mod common;

use common::{ctx_for, data_dir};
use triage_sim::budget::blocks_for;
use triage_sim::cost::{fit_cost_model, LinearCost};
use triage_sim::engine::{run, EngineConfig};
use triage_sim::model::model_by_name;
use triage_sim::policies::{
    make_policy, policy_names, EngineView, Plan, Policy, ReqId, SimRequest,
};
use triage_sim::workload::{Source, Workload, WorkloadSpec};

/// Wraps a policy and checks the engine's view before every plan.
struct Checked {
    inner: Box<dyn Policy>,
    plans: u64,
}

impl Policy for Checked {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn on_arrival(&mut self, req: &SimRequest, now: f64) {
        self.inner.on_arrival(req, now);
    }
    fn plan(&mut self, v: &EngineView) -> Plan {
        self.plans += 1;
        let held: u64 = v.running.iter().map(|r| u64::from(r.blocks)).sum();
        assert!(
            v.free_blocks <= v.total_blocks,
            "free {} > total {}",
            v.free_blocks,
            v.total_blocks
        );
        assert_eq!(
            held + u64::from(v.free_blocks),
            u64::from(v.total_blocks),
            "blocks leak"
        );
        assert!(v.running.len() <= v.max_num_seqs as usize);
        for r in v.running {
            assert!(
                r.blocks >= blocks_for(r.computed_tokens.max(r.prompt_tokens), v.block_size),
                "{r:?}"
            );
            assert!(
                r.blocks <= blocks_for(r.computed_tokens.max(r.prompt_tokens) + 1, v.block_size),
                "{r:?}"
            );
        }
        let plan = self.inner.plan(v);
        let tokens: u64 = plan
            .start
            .iter()
            .chain(&plan.run)
            .map(|&(_, k)| u64::from(k))
            .sum();
        assert!(tokens <= u64::from(v.token_budget));
        plan
    }
    fn on_iteration_done(
        &mut self,
        now: f64,
        progressed: &[(ReqId, u32, u32)],
        finished: &[ReqId],
    ) {
        self.inner.on_iteration_done(now, progressed, finished);
    }
}

fn workload(duration: f64) -> Workload {
    let spec = WorkloadSpec {
        sources: vec![Source::AzureConv, Source::AzureCode],
        duration_s: Some(duration),
        seed: 7,
        class_mix: [0.3, 0.7, 0.0],
        max_model_len: 4096,
    };
    Workload::build(&spec, &data_dir()).unwrap()
}

#[test]
fn scarce_kv_replay_keeps_accounting_exact() {
    // 600 blocks x 16 tokens: far too little for the load, so preemption happens a lot.
    let wl = workload(300.0);
    let reqs = wl.scaled(1.0);
    let cfg = EngineConfig {
        max_num_seqs: 64,
        max_num_batched_tokens: 2048,
        total_blocks: 600,
        block_size: 16,
        watermark_blocks: 6,
        max_model_len: 4096,
    };
    for name in policy_names() {
        let mut p = Checked {
            inner: make_policy(name, &ctx_for(&cfg)).unwrap(),
            plans: 0,
        };
        let cost = LinearCost {
            fixed_s: 0.005,
            per_token_s: 5e-5,
        };
        let r = run(&reqs, &mut p, &cost, &cfg, None).unwrap();
        let preempted: u32 = r.outcomes.iter().map(|o| o.preemptions).sum();
        assert!(
            preempted > 50,
            "{name}: expected heavy preemption, got {preempted}"
        );
        assert!(r.peak_blocks_used <= cfg.total_blocks);
        for o in &r.outcomes {
            assert!(o.rejected.is_none());
            assert_eq!(
                o.generated_tokens, o.output_tokens,
                "{name}: request {}",
                o.id
            );
            assert!(o.first_token.unwrap() <= o.finish.unwrap());
            assert!(o.first_start.unwrap() >= o.arrival);
        }
        assert!(p.plans as u64 >= r.iterations);
    }
}

#[test]
fn calibrated_replay_keeps_accounting_exact() {
    let model = model_by_name("llama2-7b-a100").unwrap();
    let (cost, _) = fit_cost_model(&model, &data_dir().join("profiles")).unwrap();
    let wl = workload(600.0);
    let reqs = wl.scaled(0.7);
    let total = model.num_kv_blocks();
    let cfg = EngineConfig {
        max_num_seqs: 256,
        max_num_batched_tokens: 2048,
        total_blocks: total,
        block_size: 16,
        watermark_blocks: EngineConfig::watermark_for(total, 0.01),
        max_model_len: model.max_model_len,
    };
    for name in policy_names() {
        let mut p = Checked {
            inner: make_policy(name, &ctx_for(&cfg)).unwrap(),
            plans: 0,
        };
        let r = run(&reqs, &mut p, &cost, &cfg, None).unwrap();
        assert!(r.outcomes.iter().all(|o| o.finish.is_some()));
    }
}

#[test]
fn too_long_requests_are_refused_not_stuck() {
    let cfg = EngineConfig {
        max_num_seqs: 4,
        max_num_batched_tokens: 64,
        total_blocks: 8,
        block_size: 16,
        watermark_blocks: 0,
        max_model_len: 4096,
    };
    let reqs = vec![
        common::req(0, 0, 0.0, 5000, 10),
        common::req(1, 0, 0.0, 200, 10),
        common::req(2, 0, 0.0, 20, 2),
    ];
    for name in policy_names() {
        let mut p = make_policy(name, &ctx_for(&cfg)).unwrap();
        let r = run(
            &reqs,
            p.as_mut(),
            &LinearCost {
                fixed_s: 0.01,
                per_token_s: 0.0,
            },
            &cfg,
            None,
        )
        .unwrap();
        assert!(r.outcomes[0]
            .rejected
            .as_deref()
            .unwrap()
            .contains("max_model_len"));
        assert!(r.outcomes[1]
            .rejected
            .as_deref()
            .unwrap()
            .contains("KV blocks"));
        assert!(r.outcomes[2].finish.is_some());
    }
}
