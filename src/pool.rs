//! Reusable worker threads: a request runs on an idle worker if there is one, else on a new
//! thread; a worker idle for a while ends.
//!
//! Spawning and ending a thread per request cost more than the request itself on a busy
//! machine (stack mmap/munmap, TLB shootdowns, a fresh malloc arena). The pool never queues
//! a job behind a busy worker: a job waits only for an idle worker that is already waking
//! up for it, so a slow or retrying request never delays another. This module knows
//! nothing about HTTP.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stack_size: usize,
    idle_timeout: Duration,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Workers waiting for a job (a notified worker counts until it takes one).
    idle: usize,
}

impl Pool {
    pub fn new(stack_size: usize, idle_timeout: Duration) -> Pool {
        let shared = Shared { state: Mutex::default(), wake: Condvar::new(), stack_size, idle_timeout };
        Pool { shared: Arc::new(shared) }
    }

    /// Run `job` on an idle worker, or on a new one when every worker is busy or already
    /// claimed by a queued job.
    pub fn execute(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.idle > state.jobs.len() {
            state.jobs.push_back(Box::new(job));
            self.shared.wake.notify_one();
            return Ok(());
        }
        drop(state);
        let shared = Arc::clone(&self.shared);
        let first: Job = Box::new(job);
        thread::Builder::new().stack_size(self.shared.stack_size).spawn(move || work(&shared, first))?;
        Ok(())
    }
}

/// A worker: run its first job, then whatever comes, until idle for `idle_timeout`.
fn work(shared: &Shared, first: Job) {
    first();
    while let Some(job) = next_job(shared) {
        job();
    }
}

fn next_job(shared: &Shared) -> Option<Job> {
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(job) = state.jobs.pop_front() {
            return Some(job);
        }
        state.idle += 1;
        let (guard, timeout) =
            shared.wake.wait_timeout(state, shared.idle_timeout).unwrap_or_else(|e| e.into_inner());
        state = guard;
        state.idle -= 1;
        if timeout.timed_out() && state.jobs.is_empty() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Many jobs that all block until every one of them has started: only possible if no job
    /// waits behind another.
    #[test]
    fn jobs_never_wait_for_busy_workers() {
        let pool = Pool::new(64 * 1024, Duration::from_secs(5));
        for round in 0..3 {
            let n = 40;
            let gate = Arc::new((Mutex::new(0), Condvar::new()));
            let (done, finished) = mpsc::channel();
            for _ in 0..n {
                let (gate, done) = (Arc::clone(&gate), done.clone());
                pool.execute(move || {
                    let (count, cv) = &*gate;
                    let mut started = count.lock().unwrap();
                    *started += 1;
                    cv.notify_all();
                    let (started, _) =
                        cv.wait_timeout_while(started, Duration::from_secs(10), |s| *s < n).unwrap();
                    done.send(*started == n).unwrap();
                })
                .unwrap();
            }
            let all: Vec<bool> = (0..n).map(|_| finished.recv().unwrap()).collect();
            assert!(all.iter().all(|ok| *ok), "round {round}: some job waited behind a busy worker");
        }
    }

    #[test]
    fn idle_workers_end() {
        let pool = Pool::new(64 * 1024, Duration::from_millis(20));
        let (tx, rx) = mpsc::channel();
        pool.execute(move || tx.send(()).unwrap()).unwrap();
        rx.recv().unwrap();
        for _ in 0..200 {
            if Arc::strong_count(&pool.shared) == 1 {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        panic!("the idle worker did not end");
    }
}
