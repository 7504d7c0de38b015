//! The cost model reproduces its calibration data within the stated error
//! (docs/simulator.md): linear part max 9% / mean 1.5% relative error over all TP=1
//! profile rows of every model; prefill attention within 3% on the four rows.

mod common;

use common::data_dir;
use triage_sim::cost::{fit_cost_model, CostModel, IterationWork};
use triage_sim::model::all_models;
use triage_sim::profile::read_profile;

#[test]
fn linear_fit_reproduces_profile_rows() {
    for m in all_models() {
        let (cost, report) = fit_cost_model(&m, &data_dir().join("profiles")).unwrap();
        let e = report.linear;
        assert!(e.max_rel <= 0.09, "{}: max {:.3}", m.name, e.max_rel);
        assert!(e.mean_rel <= 0.015, "{}: mean {:.4}", m.name, e.mean_rel);
        // Independent re-computation against the CSV rows.
        let rows = read_profile(
            &data_dir().join("profiles").join(m.profile_file),
            m.n_layers,
        )
        .unwrap();
        assert_eq!(rows.len(), e.n);
        for r in &rows {
            let f = cost.linear_ms.eval(f64::from(r.num_tokens));
            assert!(((f - r.linear_ms) / r.linear_ms).abs() <= e.max_rel + 1e-12);
        }
        for row in &report.prefill_attn_rows {
            assert!(
                (row.model_ms / row.measured_ms - 1.0).abs() < 0.03,
                "{}: {row:?}",
                m.name
            );
        }
    }
}

#[test]
fn derived_table_of_profiles_readme_is_reproduced() {
    // Whole-model linear ms at selected token counts, from data/profiles/README.md.
    let expect = [
        (
            "llama2-7b-a100",
            [
                (1.0, 9.28),
                (512.0, 33.39),
                (1024.0, 68.00),
                (2048.0, 133.54),
                (4096.0, 258.62),
            ],
        ),
        (
            "llama2-7b-h100",
            [
                (1.0, 5.60),
                (512.0, 12.00),
                (1024.0, 21.05),
                (2048.0, 40.38),
                (4096.0, 83.59),
            ],
        ),
        (
            "llama3-8b-a100",
            [
                (1.0, 9.70),
                (512.0, 34.67),
                (1024.0, 75.20),
                (2048.0, 145.69),
                (4096.0, 273.81),
            ],
        ),
    ];
    for (name, pts) in expect {
        let m = all_models().into_iter().find(|m| m.name == name).unwrap();
        let (cost, _) = fit_cost_model(&m, &data_dir().join("profiles")).unwrap();
        for (x, y) in pts {
            let f = cost.linear_ms.eval(x);
            assert!(((f - y) / y).abs() < 0.09, "{name} @ {x}: {f} vs {y}");
        }
    }
}

#[test]
fn iteration_time_adds_attention_and_overhead() {
    let m = all_models().remove(0);
    let (cost, _) = fit_cost_model(&m, &data_dir().join("profiles")).unwrap();
    let lin = cost.linear_ms.eval(101.0);
    let w = IterationWork {
        batched_tokens: 101,
        decode_context_tokens: 100 * 1000,
        decode_seqs: 100,
        prefill_chunks: vec![(1, 0)],
    };
    let t = cost.iteration_time(&w);
    let decode = 100.0 * 1000.0 * 32.0 * 16384.0 / 1.9e12;
    assert!((t - (lin + 2.0) / 1e3 - decode).abs() < 1e-4, "{t}");
    // 100 decodes x 1000 context on A100: ~27.6 ms of attention.
    assert!((decode - 0.0276).abs() < 1e-3);
}
