//! What counting costs the request path: the calls one request makes into `metrics.rs` (one
//! attempt, one `request_done`; and a request with two retries), timed in a loop on 1 thread
//! and on 32 threads sharing one `Metrics`. Prints nanoseconds per request; compare with the
//! ~55 µs of CPU a request costs in `make bench`. Run: `cargo run --release --example metrics_cost`.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use codex_shield::error::Outcome;
use codex_shield::metrics::{Done, Metrics, RouteKind, Tally};
use codex_shield::usage::{Spent, Usage};

const PER_THREAD: u32 = 200_000;

fn clean(m: &Metrics) {
    let mut tally = Tally::default();
    m.attempt(&mut tally, 1, Outcome::Ok, black_box(Duration::from_millis(40)));
    let done = Done {
        route: RouteKind::Responses,
        status: 200,
        bytes: 17_700,
        duration: Duration::from_millis(41),
        tally,
        delivered: true,
    };
    m.request_done(black_box(&done));
}

fn retried(m: &Metrics) {
    let mut tally = Tally::default();
    for o in [Outcome::RateLimited, Outcome::Cut] {
        m.attempt(&mut tally, 1, o, Duration::from_millis(5));
        m.retry(&mut tally, o, Duration::from_millis(1000));
    }
    m.attempt(&mut tally, 1, Outcome::Ok, Duration::from_millis(40));
    let done = Done {
        route: RouteKind::Responses,
        status: 200,
        bytes: 17_700,
        duration: Duration::from_secs(3),
        tally,
        delivered: true,
    };
    m.request_done(black_box(&done));
}

/// A clean request whose upstream reported usage (`tokens`: one short lock).
fn with_tokens(m: &Metrics) {
    let usage = Usage { input: 1200, cached: 1024, output: 300, reasoning: 192 };
    m.tokens(1, None, black_box(usage), Spent::Delivered);
    clean(m);
}

fn ns_per_request(threads: u32, request: fn(&Metrics)) -> f64 {
    let m = Arc::new(Metrics::new(1));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let m = Arc::clone(&m);
            thread::spawn(move || (0..PER_THREAD).for_each(|_| request(&m)))
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    // wall time × threads ÷ requests: CPU-ish time per request when every thread is busy
    let cores = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    started.elapsed().as_nanos() as f64 * (threads as f64).min(cores) / f64::from(threads * PER_THREAD)
}

fn main() {
    println!("| request | 1 thread | 32 threads, one shared Metrics |");
    println!("|---|--:|--:|");
    let requests = [
        ("clean: 1 attempt", clean as fn(&Metrics)),
        ("clean, with its tokens", with_tokens),
        ("2 retries, then an answer", retried),
    ];
    for (name, f) in requests {
        println!("| {name} | {:.0} ns | {:.0} ns |", ns_per_request(1, f), ns_per_request(32, f));
    }
}
