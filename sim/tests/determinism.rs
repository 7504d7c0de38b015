//! Same seed and inputs give byte-identical JSON and CSV, whatever the thread count.

mod common;

use common::data_dir;
use triage_sim::run::{simulate, SimulateError, SimulateOptions};

fn opts(out: std::path::PathBuf, jobs: usize) -> SimulateOptions {
    let mut o = SimulateOptions::defaults();
    o.data_dir = data_dir();
    o.duration_s = Some(240.0);
    o.loads = vec![0.5, 0.8];
    o.out = Some(out);
    o.jobs = jobs;
    o.plots = false;
    o
}

#[test]
fn two_runs_same_seed_identical_files() {
    let base = std::env::temp_dir().join(format!("triage-sim-det-{}", std::process::id()));
    let a = base.join("a");
    let b = base.join("b");
    simulate(&opts(a.clone(), 1)).unwrap();
    simulate(&opts(b.clone(), 2)).unwrap();
    for f in ["report.json", "classes.csv", "runs.csv"] {
        let x = std::fs::read(a.join(f)).unwrap();
        let y = std::fs::read(b.join(f)).unwrap();
        assert!(!x.is_empty());
        assert!(x == y, "{f} differs between runs");
    }
    let mut o = opts(base.join("c"), 2);
    o.seed = 43;
    simulate(&o).unwrap();
    let x = std::fs::read(a.join("report.json")).unwrap();
    let z = std::fs::read(base.join("c/report.json")).unwrap();
    assert!(
        x != z,
        "a different seed should change the class assignment"
    );
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn unknown_names_list_the_valid_ones() {
    let mut o = opts(std::env::temp_dir(), 1);
    o.out = None;
    o.model = "gpt-9".into();
    let e = simulate(&o).unwrap_err();
    assert!(matches!(e, SimulateError::Usage(_)));
    assert!(
        e.to_string().contains("llama2-7b-a100") && e.to_string().contains("llama3-8b-a100"),
        "{e}"
    );
    let mut o = opts(std::env::temp_dir(), 1);
    o.out = None;
    o.policies = vec!["fcfs".into(), "edf".into()];
    let e = simulate(&o).unwrap_err().to_string();
    assert!(
        e.contains("unknown policy `edf`") && e.contains("vllm-priority"),
        "{e}"
    );
}

#[test]
fn bundled_traces_parse_completely() {
    use triage_sim::trace::read_azure_csv;
    let conv = read_azure_csv(&data_dir().join("traces/azure2023_conv.csv")).unwrap();
    let code = read_azure_csv(&data_dir().join("traces/azure2023_code.csv")).unwrap();
    assert_eq!(conv.rows.len(), 19_366);
    assert_eq!(code.rows.len(), 8_819);
    let span = conv.rows.last().unwrap().time_s;
    assert!((span - 3501.7).abs() < 0.1, "{span}");
}
