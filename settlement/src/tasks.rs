//! Independent tasks over a few threads: each thread takes the next task
//! from one shared counter when it finishes its last, so a long task does
//! not hold up the short ones queued behind a fixed split. The engine's
//! programs and the fraud rules' programs run this way.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The threads worth starting for `n` tasks: the machine's cores, at most
/// `n`, at least one.
pub fn threads_for(n: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n.max(1))
}

/// Calls `task(k)` once for every `k` in `0..n`, taken in that order by up
/// to `threads` threads, and returns when all are done. A task that
/// panics makes this panic once the others have stopped.
pub fn run(n: usize, threads: usize, task: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            sc.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    break;
                }
                task(k);
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn every_task_runs_once() {
        for (n, threads) in [(0, 2), (1, 4), (7, 2), (100, 3), (5, 1)] {
            let done = Mutex::new(vec![0u32; n]);
            run(n, threads, |k| done.lock().unwrap()[k] += 1);
            assert_eq!(
                done.into_inner().unwrap(),
                vec![1; n],
                "{n} tasks, {threads} threads"
            );
        }
    }

    #[test]
    fn a_long_task_does_not_hold_up_the_others() {
        // two threads: while one is on the long first task, the other takes
        // every other task in turn
        let order = Mutex::new(Vec::new());
        run(6, 2, |k| {
            if k == 0 {
                while order.lock().unwrap().len() < 5 {
                    std::thread::yield_now();
                }
            }
            order.lock().unwrap().push(k);
        });
        assert_eq!(order.into_inner().unwrap(), vec![1, 2, 3, 4, 5, 0]);
    }
}
