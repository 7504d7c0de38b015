//! `triage stress` and `triage bench-compare` end to end, at toy sizes: the binary runs,
//! every invariant holds (exit 0), memory is measured, and the JSON report is written.

use std::process::Command;

fn triage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_triage"))
}

#[test]
fn stress_small_run_holds_every_invariant() {
    let out = triage()
        .args([
            "stress",
            "--queued",
            "3000",
            "--threads",
            "2",
            "--rate",
            "5000",
            "--duration",
            "1",
            "--aging-ms",
            "200",
        ])
        .output()
        .expect("run triage stress");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stress failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("invariants          OK"), "{stdout}");
    assert!(
        stdout.contains("bytes per queued request"),
        "memory measured: {stdout}"
    );
    assert!(stdout.contains("submit latency"), "{stdout}");
}

#[test]
fn bench_compare_quick_writes_json() {
    let dir = std::env::temp_dir().join(format!("triage-bc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bc.json");
    let out = triage()
        .args([
            "bench-compare",
            "--producers",
            "1,2",
            "--queued",
            "1000,5000",
            "--submit-runs",
            "2",
            "--submit-ops",
            "4096",
            "--step-runs",
            "1",
            "--steps",
            "20",
            "--step-seconds",
            "0.2",
            "--contended-producers",
            "1,2",
            "--contended-queued",
            "5000",
            "--contended-runs",
            "1",
            "--contended-seconds",
            "0.1",
            "--out",
        ])
        .arg(&path)
        .output()
        .expect("run triage bench-compare");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("json written"))
            .expect("valid json");
    assert_eq!(json["submit"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["step"].as_array().map(Vec::len), Some(2));
    assert!(json["step"][1]["ratios_p99"].is_array());
    let contended = json["contended"].as_array().expect("contended rows");
    assert_eq!(contended.len(), 2);
    for side in ["triage", "heap"] {
        assert!(
            contended[1][side]["step"]["count"].as_u64() > Some(10),
            "{contended:?}"
        );
        assert!(
            contended[1][side]["submit"]["count"].as_u64() > Some(10),
            "{contended:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_compare_refuses_a_depth_below_the_batch() {
    let out = triage()
        .args([
            "bench-compare",
            "--queued",
            "1000,100",
            "--out",
            "/dev/null",
        ])
        .output()
        .expect("run triage bench-compare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a depth of 100 with batch 256 runs");
    assert!(
        stderr.contains("--queued 100 is below --batch 256"),
        "the error names the depth and the batch: {stderr}"
    );
}
