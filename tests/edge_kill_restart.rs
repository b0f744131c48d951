//! The small version of `make soak` that runs in `make test`: a mixed run of
//! clicks and postbacks from 32 clients, workerd killed with SIGKILL once in
//! the middle and restarted on the same persisted state; every acknowledged
//! click and postback is in the export exactly once, and nothing answered 5xx.

use e2e::soak::{run, Plan};

#[test]
fn nothing_acknowledged_is_lost_across_a_sigkill() {
    let r = run(&Plan {
        clicks: 3000,
        postbacks: 1000,
        clients: 32,
        kills: 1,
        // the durable acknowledgement (the default answers before D1)
        vars: vec![("CLICK_ACK".into(), "durable".into())],
        name: "killtest".into(),
    });
    eprintln!("{:#}", r.to_json());
    assert_eq!(r.kills_survived, 1);
    assert_eq!(r.server_errors, 0, "{:?}", r.problems);
    assert_eq!(
        r.clicks_lost, 0,
        "acknowledged clicks lost: {:?}",
        r.problems
    );
    assert_eq!(r.clicks_duplicated, 0);
    assert_eq!(r.clicks_exported, r.clicks_acked);
    assert!(
        r.clicks_acked > 2500,
        "most clicks answered: {}",
        r.clicks_acked
    );
    assert_eq!(r.postbacks_lost, 0);
    assert_eq!(r.postbacks_duplicated, 0);
    assert_eq!(
        r.postbacks_exported, 1000,
        "every postback acknowledged once"
    );
    assert!(r.duplicate_answers > 0 && r.malformed_sent > 0);
    assert_eq!(r.duplicate_answer_mismatches, 0);
    assert!(r.ok(), "{:?}", r.problems);
}
