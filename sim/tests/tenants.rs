//! `triage tenants`: on the bundled trace at a load where a backlog forms, fairness between
//! tenants keeps the light tenants' latency near what the engine gives everyone, while
//! FIFO puts them behind the heavy tenant's backlog.
//!
//! In the aging ladder the backlog is the whole class's queue, so fairness cuts the light
//! tenants' TTFT p99 by more than half. In deadline order (the default) requests that can
//! no longer meet their deadline are already relegated behind the rest, so the backlog a
//! light tenant waits behind is shorter either way; fairness still shortens its wait.

use triage_sim::tenants::{run_tenants, TenantsOptions, HEAVY};

mod common;

fn run(order: triage::QueueOrder) -> Vec<triage_sim::tenants::TenantRow> {
    let mut o = TenantsOptions::defaults();
    o.sim.data_dir = common::data_dir();
    o.sim.duration_s = Some(1800.0);
    o.sim.triage_config = Some(triage::SchedulerConfig {
        order,
        ..triage::SchedulerConfig::default()
    });
    o.loads = vec![0.7];
    let rows = run_tenants(&o).expect("runs");
    assert_eq!(rows.len(), 5);
    rows
}

#[test]
fn fairness_keeps_light_tenants_out_of_the_heavy_tenants_backlog() {
    let rows = run(triage::QueueOrder::Ladder);
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

#[test]
fn in_deadline_order_fairness_still_shortens_the_light_tenants_wait() {
    let rows = run(triage::QueueOrder::Deadline);
    for r in rows.iter().filter(|r| r.tenant != HEAVY) {
        let (off, on) = (r.wait_p99_off_s.unwrap(), r.wait_p99_on_s.unwrap());
        assert!(
            on < 0.85 * off,
            "light tenant {}: wait p99 {on:.2} s with fairness, {off:.2} s without",
            r.tenant
        );
        assert!(r.ttft_p99_on_s.unwrap() <= r.ttft_p99_off_s.unwrap());
    }
    let heavy = rows.iter().find(|r| r.tenant == HEAVY).unwrap();
    assert!(heavy.wait_p99_on_s.unwrap() >= heavy.wait_p99_off_s.unwrap());
}
