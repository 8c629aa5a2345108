//! The soak's multi-upstream phase: three mock upstreams behind one proxy, each failing a
//! share of its attempts on its own seeded dice, so that the proxy's shared health (cooldowns,
//! circuit breaker, single probe) and its failover meet faults that come and go on each
//! upstream independently.
//!
//! A mock decides each attempt from its own upstream number, the request id and how many
//! times that request came to it before, so the run is reproducible whatever the arrival order
//! and no upstream's dice depend on another's. A few doomed requests are failed by every
//! upstream. Every attempt is recorded by request id and upstream, and each request is judged
//! on the record: its own clean answer byte for byte, served by its last attempt; or an
//! OpenAI-shaped error after exactly `ATTEMPTS` attempts that all failed. A mock also counts the
//! attempts that arrive well inside a rest it asked for (`retry-after: 1`) and any request that
//! carries another upstream's key. Part of `examples/soak.rs` (`SOAK_PHASES=multi`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::mock::{Mock, Seen, Step};
use super::{
    clean_step, fault_step, fixtures, plan, soak_id, Fault, Got, Plan, Proxy, Rng, Run, ATTEMPTS, FAULTS,
    WARMUP,
};

/// Share of its attempts each upstream fails, in percent (upstream 1, which failover asks
/// first, the most).
const RATES: [u64; 3] = [30, 20, 10];
/// Share of requests that every upstream fails, in percent.
const DOOMED: u64 = 2;
/// One 429 in this many asks for a whole second (`retry-after: 1`); the others for a few ms.
const LONG_REST_ONE_IN: u64 = 6;
const LONG_REST: Duration = Duration::from_secs(1);
/// An attempt that reaches a resting upstream this long after its 429 was sent, and this
/// long before the rest ends, was sent into the rest (earlier ones may have been under way).
const REST_SLACK: (Duration, Duration) = (Duration::from_millis(250), Duration::from_millis(50));
/// Each upstream's own key.
const KEYS: [&str; 3] = ["sk-soak", "sk-soak-2", "sk-soak-3"];

/// What one mock upstream did.
#[derive(Default)]
struct Side {
    attempts: usize,
    /// Clean answers served.
    answered: usize,
    injected: BTreeMap<Fault, usize>,
    /// The rest it asked for last: (when the 429 left, when the rest ends).
    rest: Option<(Instant, Instant)>,
    /// Attempts that arrived well inside that rest.
    early: usize,
    /// Requests that carried another upstream's key.
    wrong_key: usize,
}

/// The record of the three mocks, shared with their connection threads.
#[derive(Default)]
struct Record {
    /// Per request id: each attempt's upstream (0-based) and the fault it met (`None`: its
    /// clean answer), in arrival order.
    attempts: HashMap<usize, Vec<(usize, Option<Fault>)>>,
    sides: [Side; 3],
    unknown: usize,
}

fn doomed(i: usize, seed: u64) -> bool {
    Rng(seed ^ 0xD00D ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).below(100) < DOOMED
}

/// Upstream `k`'s answer to an attempt of request `id`, which came to it `before` times already.
fn answer(
    k: usize,
    id: usize,
    plan: &Plan,
    doomed: bool,
    before: usize,
    stalls: usize,
    seed: u64,
) -> (Option<Fault>, Step) {
    let mut rng = Rng(seed
        ^ ((k as u64 + 1) << 56)
        ^ (id as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)
        ^ ((before as u64) << 40));
    if !doomed && rng.below(100) >= RATES[k] {
        return (None, clean_step(plan));
    }
    let mut fault = FAULTS[rng.below(FAULTS.len() as u64) as usize];
    if fault == Fault::Stall && stalls >= 2 {
        fault = Fault::Status503; // keep each request's time bounded
    }
    if fault == Fault::Status429 && rng.below(LONG_REST_ONE_IN) == 0 {
        let body = fixtures::error_body("429", "Rate limit reached for this deployment.");
        let step = Step::json(429, &body).header("retry-after", &LONG_REST.as_secs().to_string());
        return (Some(fault), step);
    }
    (Some(fault), fault_step(fault, plan.chat, &plan.clean, &mut rng))
}

fn start_upstream(k: usize, plans: Arc<Vec<Plan>>, record: Arc<Mutex<Record>>, seed: u64) -> Mock {
    Mock::generated(move |_, seen: &Seen| {
        let now = Instant::now();
        let mut record = record.lock().unwrap();
        let Record { attempts, sides, unknown } = &mut *record;
        let side = &mut sides[k];
        let Some((id, plan)) = soak_id(seen).and_then(|id| Some((id, plans.get(id)?))) else {
            *unknown += 1;
            return Step::json(599, &fixtures::error_body("mock", "request without a soak id"));
        };
        if seen.header("authorization") != Some(format!("Bearer {}", KEYS[k]).as_str()) {
            side.wrong_key += 1;
        }
        if side.rest.is_some_and(|(since, until)| now > since + REST_SLACK.0 && now + REST_SLACK.1 < until) {
            side.early += 1;
        }
        side.attempts += 1;
        let mine = attempts.entry(id).or_default();
        let before = mine.iter().filter(|(u, _)| *u == k).count();
        let stalls = mine.iter().filter(|(_, f)| *f == Some(Fault::Stall)).count();
        let (fault, step) = answer(k, id, plan, doomed(id, seed), before, stalls, seed);
        mine.push((k, fault));
        match fault {
            None => side.answered += 1,
            Some(fault) => *side.injected.entry(fault).or_insert(0) += 1,
        }
        if step.headers.iter().any(|(name, _)| name == "retry-after") {
            side.rest = Some((now, now + LONG_REST));
        }
        step
    })
}

/// How a request fared, judged on the mocks' record of its attempts.
fn judge(got: &Got, attempts: &[(usize, Option<Fault>)], doomed: bool) -> Result<&'static str, String> {
    let clean = attempts.iter().filter(|(_, f)| f.is_none()).count();
    let last_clean = attempts.last().is_some_and(|(_, f)| f.is_none());
    let n = attempts.len();
    match got {
        Got::Exact if doomed => Err("an answer for a request every upstream failed".into()),
        Got::Exact if clean == 1 && last_clean && n <= ATTEMPTS => {
            let upstreams = attempts.iter().map(|(u, _)| *u).collect::<std::collections::BTreeSet<_>>();
            Ok(if n == 1 {
                "first attempt"
            } else if upstreams.len() > 1 {
                "after failover"
            } else {
                "after retries on one upstream"
            })
        }
        Got::Exact => Err(format!("answered, but its {n} attempts served {clean} clean answers")),
        Got::Error(..) if clean == 0 && n == ATTEMPTS => Ok("exhausted"),
        Got::Error(status, code) => {
            Err(format!("error {status} {code} after {n} attempts, {clean} served clean"))
        }
        Got::Other(what) => Err(what.clone()),
    }
}

/// The multi-upstream phase; its violations.
pub fn phase(run: &Run, requests: usize) -> Vec<String> {
    let seed = run.seed ^ 0x3_0000;
    let total = WARMUP + requests;
    let plans: Arc<Vec<Plan>> = Arc::new((0..total).map(|i| plan(i, seed)).collect());
    let record = Arc::new(Mutex::new(Record::default()));
    let mocks: Vec<Mock> =
        (0..3).map(|k| start_upstream(k, Arc::clone(&plans), Arc::clone(&record), seed)).collect();
    let routing: String = super::env_or("SOAK_ROUTING", "failover".to_string());
    let extra = [
        ("AZURE_ENDPOINT_2", mocks[1].v1()),
        ("AZURE_API_KEY_2", KEYS[1].to_string()),
        ("AZURE_ENDPOINT_3", mocks[2].v1()),
        ("AZURE_API_KEY_3", KEYS[2].to_string()),
        ("ROUTING", routing.clone()),
    ];
    let proxy = Proxy::start(&run.bin, &mocks[0].v1(), &extra);
    println!(
        "soak multi: {requests} requests (+{WARMUP} warm-up) from {} clients, three upstreams failing \
         {RATES:?}% of attempts, {DOOMED}% doomed, ROUTING={routing}, pid {}",
        run.clients,
        proxy.pid()
    );
    let load = proxy.load(&plans, run.clients);
    let (warm, outcomes) = (&load.warm, &load.outcomes);

    let record = record.lock().unwrap();
    let mut violations = Vec::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut attempts_hist = [0usize; ATTEMPTS + 1];
    for (i, got) in warm.iter().chain(outcomes) {
        let attempts = record.attempts.get(i).map_or(&[][..], Vec::as_slice);
        attempts_hist[attempts.len().min(ATTEMPTS)] += 1;
        match judge(got, attempts, doomed(*i, seed)) {
            Ok(kind) => *kinds.entry(kind).or_insert(0) += 1,
            Err(what) => {
                *kinds.entry("unexpected").or_insert(0) += 1;
                violations.push(format!("request {i}: {what}; attempts {attempts:?}"));
            }
        }
        if let Got::Error(status, code) = got {
            *codes.entry(format!("{status} {code}")).or_insert(0) += 1;
        }
    }
    if warm.len() + outcomes.len() != total {
        violations.push(format!("{} requests lost", total - warm.len() - outcomes.len()));
    }
    if record.unknown > 0 {
        violations.push(format!("{} upstream requests without a soak id", record.unknown));
    }
    let doomed_count = (0..total).filter(|&i| doomed(i, seed)).count();
    println!("  requests        {total} ({WARMUP} warm-up + {requests}), {doomed_count} doomed");
    println!("  outcomes        {kinds:?}");
    println!("  errors          {codes:?}");
    println!("  attempts/request {:?} (index: attempts)", attempts_hist);
    for (k, side) in record.sides.iter().enumerate() {
        println!(
            "  upstream {}      {} attempts, answered {}, failed {:?}, sent into a rest {}, wrong key {}",
            k + 1,
            side.attempts,
            side.answered,
            side.injected,
            side.early,
            side.wrong_key
        );
        if side.early > 0 {
            violations.push(format!(
                "upstream {}: {} attempts sent into a rest it asked for",
                k + 1,
                side.early
            ));
        }
        if side.wrong_key > 0 {
            violations.push(format!(
                "upstream {}: {} requests with another upstream's key",
                k + 1,
                side.wrong_key
            ));
        }
    }
    proxy.check_health(&load, requests, &mut violations);
    violations
}
