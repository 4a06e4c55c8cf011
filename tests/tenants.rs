//! Acceptance: one application, three practices, one DrChrono budget (the `tenants`
//! example, run in-process under paused time against the simulator's router).
//!
//! Practice A queues 1,000 background requests at the top of an hour; B and C each send one
//! interactive request every 30 s for that hour. With fair shares, B and C are served as if
//! A were not there, A finishes within 1 % of the optimum for all 1,240 requests, and the
//! simulator throttles nothing. With one first-come first-served queue, the same scenario
//! leaves B and C waiting behind A's backlog: the fairness is what makes the difference.

use examples::tenants_scenario::{BACKFILL, Outcome, config, optimum_makespan_s, run};

fn assert_everything_served(outcome: &Outcome) {
    assert_eq!(outcome.server.throttled, 0, "{outcome:?}");
    assert!(outcome.server.peak_second <= 9, "{outcome:?}");
    assert!(outcome.server.peak_window <= 290, "{outcome:?}");
    assert!(outcome.server.peak_hour <= 500, "{outcome:?}");
    let expected = [("A", BACKFILL), ("B", 120), ("C", 120)];
    for (practice, requests) in expected {
        let t = &outcome.tenants[practice];
        assert_eq!(
            (t.requests, t.succeeded),
            (requests, requests),
            "{practice}"
        );
    }
}

#[test]
fn fair_shares_serve_light_practices_at_once_and_the_backfill_at_the_optimum() {
    let fair = run(true).unwrap();
    assert_everything_served(&fair);
    for practice in ["B", "C"] {
        let t = &fair.tenants[practice];
        assert!(t.p99_wait_s <= 2.0, "{practice}: {t:?}");
        assert!(t.max_wait_s <= 5.0, "{practice}: {t:?}");
    }
    let optimum = optimum_makespan_s(BACKFILL + 240, &config().unwrap());
    let a = &fair.tenants["A"];
    assert!(
        a.last_answer_s >= optimum,
        "{a:?} before the optimum {optimum}"
    );
    assert!(
        a.last_answer_s <= optimum * 1.01,
        "A's last answer at {} s, the optimum is {optimum} s",
        a.last_answer_s
    );
    // The last line of `--json`, in the documented shape.
    let line = serde_json::to_value(&fair).unwrap();
    for key in [
        "requests",
        "succeeded",
        "p50_wait_s",
        "p99_wait_s",
        "max_wait_s",
    ] {
        assert!(line["tenants"]["B"][key].is_number(), "{key}: {line}");
    }
    assert_eq!(line["server"]["throttled"], 0);
    assert!(line["makespan_s"].as_f64().unwrap() >= a.last_answer_s);
}

#[test]
fn first_come_first_served_leaves_light_practices_behind_the_backfill() {
    let fifo = run(false).unwrap();
    assert_everything_served(&fifo);
    for practice in ["B", "C"] {
        let t = &fifo.tenants[practice];
        // A's backlog spent the hour: B and C wait for the next one.
        assert!(t.p99_wait_s > 600.0, "{practice}: {t:?}");
        assert!(t.max_wait_s > 1_800.0, "{practice}: {t:?}");
    }
}
