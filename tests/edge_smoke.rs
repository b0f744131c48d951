//! The worker builds, starts in real workerd and answers.
use e2e::harness::{agent, send, Worker};

#[test]
fn worker_answers_in_workerd() {
    let w = Worker::start();
    let (status, body, _) = send(agent().get(&w.url("/healthz")), None);
    assert_eq!(status, 200);
    assert_eq!(body, "ok");
    let (status, _, _) = send(agent().get(&w.url("/no-such-route")), None);
    assert_eq!(status, 404);
}
