//! `triage tenants`: on the bundled trace at a load where a backlog forms, fairness between
//! tenants keeps the light tenants' latency near what the engine gives everyone, while
//! FIFO puts them behind the heavy tenant's backlog.

use triage_cli::tenants::{run_tenants, TenantsOptions, HEAVY};

mod common;

#[test]
fn fairness_keeps_light_tenants_out_of_the_heavy_tenants_backlog() {
    let mut o = TenantsOptions::defaults();
    o.sim.data_dir = common::data_dir();
    o.sim.duration_s = Some(1800.0);
    o.loads = vec![0.7];
    let rows = run_tenants(&o).expect("runs");
    assert_eq!(rows.len(), 5);
    for r in rows.iter().filter(|r| r.tenant != HEAVY) {
        let (off, on) = (r.ttft_p99_off_s.unwrap(), r.ttft_p99_on_s.unwrap());
        assert!(
            on * 2.0 < off,
            "light tenant {}: TTFT p99 {on:.2} s with fairness, {off:.2} s without",
            r.tenant
        );
    }
    // The heavy tenant pays for it, but is not starved.
    let heavy = rows.iter().find(|r| r.tenant == HEAVY).unwrap();
    assert!(heavy.ttft_p99_on_s.unwrap() >= heavy.ttft_p99_off_s.unwrap());
    assert!(heavy.ttft_p99_on_s.unwrap() < 60.0);
}
