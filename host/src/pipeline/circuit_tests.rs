//! The circuit's state machine, step by step, on a hand-driven clock.

use super::*;

fn circuit() -> Circuit {
    Circuit::new(Some(CircuitConfig {
        failure_ratio: 0.5,
        min_events: 4,
        window_ms: 1_000,
        open_ms: 100,
        max_open_ms: 350,
        probes: 2,
    }))
}

#[test]
fn without_a_config_it_never_trips_but_can_be_paused() {
    let c = Circuit::new(None);
    let t = Instant::now();
    for _ in 0..100 {
        assert_eq!(c.record(t, Verdict::Failure, false), None);
    }
    assert_eq!(c.gate(t).0, Gate::Pass);
    opened(c.open_until(t, t + Duration::from_secs(5)));
    assert!(matches!(c.gate(t).0, Gate::Wait(_)));
}

fn opened(change: Option<Change>) -> Duration {
    match change {
        Some(Change::Opened { cooldown, .. }) => cooldown,
        other => panic!("expected the circuit to open, got {other:?}"),
    }
}

#[test]
fn opens_at_the_ratio_once_the_window_holds_enough_attempts() {
    let c = circuit();
    let t = Instant::now();
    // Three failures alone are below min_events.
    for _ in 0..3 {
        assert_eq!(c.record(t, Verdict::Failure, false), None);
    }
    assert_eq!(c.gate(t).0, Gate::Pass);
    // The fourth attempt reaches min_events at 3/4 failed.
    assert_eq!(
        opened(c.record(t, Verdict::Success, false)),
        Duration::from_millis(100)
    );
    assert_eq!(c.gate(t).0, Gate::Wait(t + Duration::from_millis(100)));
}

#[test]
fn rejects_never_trip_it_and_old_attempts_leave_the_window() {
    let c = circuit();
    let t = Instant::now();
    for _ in 0..50 {
        assert_eq!(c.record(t, Verdict::Neutral, false), None);
    }
    for _ in 0..3 {
        c.record(t, Verdict::Failure, false);
    }
    // A second later those three failures have left the window.
    let later = t + Duration::from_millis(1_000);
    for _ in 0..3 {
        assert_eq!(c.record(later, Verdict::Success, false), None);
    }
    assert_eq!(
        c.record(later, Verdict::Failure, false),
        None,
        "1 of 4 failed"
    );
    assert_eq!(
        c.state(later),
        State::Closed {
            failures: 1,
            attempts: 4
        }
    );
}

#[test]
fn half_open_lets_probes_through_and_their_successes_close_it() {
    let c = circuit();
    let t = Instant::now();
    for _ in 0..4 {
        c.record(t, Verdict::Failure, false);
    }
    let after = t + Duration::from_millis(100);
    assert_eq!(c.gate(after), (Gate::Probe, Some(Change::HalfOpened)));
    assert_eq!(c.gate(after), (Gate::Probe, None));
    assert!(
        matches!(c.gate(after).0, Gate::Wait(_)),
        "both probes are out"
    );
    // An attempt that started before the opening changes nothing.
    assert_eq!(c.record(after, Verdict::Failure, false), None);
    assert_eq!(c.record(after, Verdict::Success, true), None);
    assert_eq!(
        c.record(after, Verdict::Success, true),
        Some(Change::Closed)
    );
    assert_eq!(c.gate(after).0, Gate::Pass);
}

#[test]
fn a_failing_probe_reopens_with_a_doubled_cooldown_up_to_the_cap() {
    let c = circuit();
    let mut t = Instant::now();
    for _ in 0..4 {
        c.record(t, Verdict::Failure, false);
    }
    let mut cooldowns = vec![];
    for _ in 0..4 {
        t += Duration::from_secs(1);
        assert_eq!(c.gate(t).0, Gate::Probe);
        cooldowns.push(opened(c.record(t, Verdict::Failure, true)).as_millis());
    }
    assert_eq!(cooldowns, [200, 350, 350, 350]);
    // A neutral probe frees its slot without deciding.
    t += Duration::from_secs(1);
    assert_eq!(c.gate(t).0, Gate::Probe);
    assert_eq!(c.record(t, Verdict::Neutral, true), None);
    assert!(matches!(c.state(t), State::HalfOpen { probes_out: 0 }));
}

#[test]
fn opened_elsewhere_and_closed_by_hand() {
    let c = circuit();
    let t = Instant::now();
    let until = t + Duration::from_secs(30);
    opened(c.open_until(t, until));
    assert_eq!(
        c.open_until(t, t + Duration::from_secs(1)),
        None,
        "already open longer"
    );
    assert!(matches!(
        c.state(t),
        State::Open {
            cause: Cause::Elsewhere,
            ..
        }
    ));
    assert_eq!(c.close(), Some(Change::Closed));
    assert_eq!(c.close(), None);
    assert_eq!(c.gate(t).0, Gate::Pass);
}

#[test]
fn only_local_decisions_are_marked_local() {
    let c = circuit();
    let watch = c.transitions();
    let t = Instant::now();
    for _ in 0..4 {
        c.record(t, Verdict::Failure, false);
    }
    let seen = *watch.borrow();
    assert!(
        matches!(
            seen,
            Some(Transition {
                change: Change::Opened { .. },
                local: true
            })
        ),
        "{seen:?}"
    );
    c.close();
    assert_eq!(
        *watch.borrow(),
        Some(Transition {
            change: Change::Closed,
            local: false
        })
    );
}
