//! Time at the edges: seconds to [`Timestamp`] refuses what the type cannot hold (instead
//! of wrapping or saturating into a wrong order), and a [`ManualClock`] asked to go
//! backwards either refuses (`try_set`) or, as documented, stays put (`set`).

use std::time::Duration;
use triage::{Clock, ClockWentBackwards, ManualClock, Timestamp};

#[test]
fn seconds_outside_the_timestamp_range_are_refused() {
    // The bindings' vLLM queue turned NaN, +inf and 1e300 into timestamps that sorted
    // before a request of 10 s; the library now says they do not fit.
    for bad in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e300,
        -1e300,
        -1.0,
        -1e-9,
        18_446_744_073.709_553, // the float after the largest accepted: 2^64 ns once rounded
        f64::MAX,
    ] {
        assert_eq!(Timestamp::checked_from_secs_f64(bad), None, "{bad:e}");
    }
    assert_eq!(
        Timestamp::checked_from_secs_f64(10.0),
        Some(Timestamp(10_000_000_000))
    );
    assert_eq!(Timestamp::checked_from_secs_f64(0.0), Some(Timestamp::ZERO));
    // The largest float whose nanoseconds round below 2^64 is accepted and maps just below
    // `MAX` (the products are 2048 ns apart there); the next float up is refused (above).
    assert_eq!(
        Timestamp::checked_from_secs_f64(18_446_744_073.709_55),
        Some(Timestamp(u64::MAX - 2047))
    );
    assert_eq!(Timestamp::checked_from_secs_f64(2f64.powi(64) / 1e9), None);
}

#[test]
fn seconds_to_timestamp_is_monotone_near_today_and_the_limit() {
    let mut prev = Timestamp::ZERO;
    for secs in [
        0.5,
        1.0,
        1_700_000_000.125,
        1_700_000_000.125_000_2,
        1e10,
        18_446_744_073.0,
        18_446_744_073.709_55,
    ] {
        let t = Timestamp::checked_from_secs_f64(secs).expect("in range");
        assert!(t > prev, "{secs} -> {t:?} after {prev:?}");
        prev = t;
    }
}

#[test]
fn durations_past_the_limit_are_refused_by_the_checked_constructor() {
    let max = Duration::from_nanos(u64::MAX);
    assert_eq!(Timestamp::checked_from_duration(max), Some(Timestamp::MAX));
    let past = max + Duration::from_nanos(1);
    assert_eq!(Timestamp::checked_from_duration(past), None);
    assert_eq!(Timestamp::from_duration(past), Timestamp::MAX, "saturates");
}

#[test]
fn manual_clock_try_set_refuses_to_go_backwards() {
    let clock = ManualClock::new(Timestamp(100));
    assert_eq!(
        clock.try_set(Timestamp(100)),
        Ok(()),
        "the same time is fine"
    );
    assert_eq!(
        clock.try_set(Timestamp(99)),
        Err(ClockWentBackwards {
            requested: Timestamp(99),
            current: Timestamp(100)
        })
    );
    assert_eq!(clock.now(), Timestamp(100));
    clock.try_set(Timestamp(250)).unwrap();
    assert_eq!(clock.now(), Timestamp(250));
    let e = clock.try_set(Timestamp(7)).unwrap_err();
    assert!(
        e.to_string()
            .contains("7ns is earlier than the clock's 250ns"),
        "{e}"
    );
    // `set` keeps its documented behaviour: an earlier time leaves the clock unchanged.
    clock.set(Timestamp(8));
    assert_eq!(clock.now(), Timestamp(250));
}
