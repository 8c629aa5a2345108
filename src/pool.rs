//! The upstreams and their health, shared by every request: which one an attempt goes to,
//! and how long a failing one rests.
//!
//! Each upstream has a `Health`: a time before which it is not chosen (a cooldown), how many
//! failure episodes it has had in a row (the circuit breaker's count: each one doubles the
//! next cooldown, one success closes it), and whether one request is probing it after a
//! cooldown (the others keep away until the probe's answer starts). `choose` is a pure
//! function of the health table and the time; `Pool` wraps it with the lock and the
//! bookkeeping. This module never sleeps and never talks to an upstream: `shield.rs` asks it
//! where to go and tells it what happened.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{Config, Routing, Upstream};
use crate::error::Outcome;
use crate::failure::{Failure, Fate};
use crate::retry::{self, Policy};
use crate::session;

/// How long an upstream whose answer was final for it alone (401, 403, 404,
/// `insufficient_quota`) is put aside when other upstreams can serve.
pub const ASIDE: Duration = Duration::from_secs(300);

/// How often a request waiting for another request's probe looks again.
const PROBE_POLL: Duration = Duration::from_millis(20);

/// The health of one upstream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// Not chosen before this instant.
    pub until: Option<Instant>,
    /// Failure episodes in a row; a success resets it.
    pub failures: u32,
    /// When the current failure episode began: failures of attempts that started before it
    /// are the same episode (ten requests hit by the same 429 count once).
    pub episode: Option<Instant>,
    /// Since when one request has been probing it after a cooldown.
    pub probe: Option<Instant>,
    /// When the rest was last set or lengthened: the success of an attempt that started
    /// before then is older news and changes nothing (a request under way when a 429
    /// arrived must not lift the rest the 429 asked for).
    pub rested_at: Option<Instant>,
    /// Why it is resting.
    pub reason: Option<Outcome>,
    /// Put aside after a refusal for it alone (401, 403, 404, quota).
    pub aside: bool,
}

impl Health {
    /// Whether it is resting at `now`.
    pub fn cooling(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| until > now)
    }

    /// Whether an attempt that started at `started` began before the latest rest was set.
    fn older_than_rest(&self, started: Instant) -> bool {
        self.rested_at.is_some_and(|at| started < at)
    }
}

/// Where the next attempt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// To the upstream at this index (0-based), now.
    Go(usize),
    /// Nowhere yet: every upstream rests (or is being probed); look again after this long.
    Wait(Duration),
}

/// The upstream an attempt should use at `now`: the first ready one in the request's `order`
/// (`Pool::order`: failover from 0, round-robin from the next in turn, a session's own
/// ranking). A probe older than `stale` is taken for abandoned.
pub fn choose(health: &[Health], now: Instant, order: &[usize], stale: Duration) -> Choice {
    let probing = |h: &Health| h.probe.is_some_and(|since| now.saturating_duration_since(since) < stale);
    let ready = order.iter().copied().find(|&i| !health[i].cooling(now) && !probing(&health[i]));
    if let Some(i) = ready {
        return Choice::Go(i);
    }
    let earliest = health.iter().filter(|h| !probing(h)).filter_map(|h| h.until).min();
    let wait = earliest
        .map_or(PROBE_POLL, |until| until.saturating_duration_since(now).max(Duration::from_millis(1)));
    Choice::Wait(if health.iter().any(probing) { wait.min(PROBE_POLL) } else { wait })
}

/// The order in which a request looks at the upstreams numbered `numbers`: failover from
/// upstream 1 (every conversation already stays on the first healthy one); round-robin from
/// the `turn`-th in turn, or, for a request that names its session (with `STICKY_SESSIONS`),
/// the session's own ranking (`session::ranked`), so it stays on one upstream while that one
/// is ready and moves, alone with the others of its upstream, when it rests.
pub fn order(routing: Routing, session: Option<&str>, numbers: &[usize], turn: usize) -> Vec<usize> {
    let n = numbers.len();
    match (routing, session) {
        (Routing::Failover, _) => (0..n).collect(),
        (Routing::RoundRobin, Some(key)) => session::ranked(key, numbers),
        (Routing::RoundRobin, None) => (0..n).map(|k| (turn + k) % n.max(1)).collect(),
    }
}

/// How an attempt ended, as far as its upstream's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Report {
    /// The upstream answered properly (an answer, or a final error about the request itself).
    Healthy,
    /// It failed in a way that concerns every request (a rate limit, a server error, no
    /// connection): rest for at least `hint` (the upstream's own retry hint) and the backoff.
    Failed { outcome: Outcome, hint: Option<Duration> },
    /// It failed this request (a cut, a stall, an error event without a hint, something that
    /// is not an answer): the request waits before it tries this upstream again, the others
    /// need not.
    Local,
    /// Its answer was final for it alone (its key, deployment or quota).
    Refused { outcome: Outcome },
    /// Says nothing about the upstream (the answer was too large for us).
    Neutral,
}

impl Report {
    /// What a failed attempt says about its upstream.
    pub fn of(failure: &Failure) -> Report {
        let outcome = failure.outcome;
        match failure.fate {
            Fate::Retry { hint } if failure.shared => Report::Failed { outcome, hint },
            Fate::Retry { .. } => Report::Local,
            Fate::Elsewhere => Report::Refused { outcome },
            Fate::Deliver => Report::Healthy,
            Fate::GiveUp => Report::Neutral,
        }
    }
}

/// The new health of an upstream after an attempt that started at `started` ended at `now`
/// with `report`. `others` says whether other upstreams exist (only then is one put aside).
pub fn update(
    mut h: Health,
    report: Report,
    started: Instant,
    now: Instant,
    others: bool,
    policy: &Policy,
    jitter: f64,
) -> Health {
    if report == Report::Healthy && h.older_than_rest(started) {
        return h;
    }
    h.probe = None;
    match report {
        Report::Healthy => Health::default(),
        Report::Neutral | Report::Local => h,
        Report::Refused { .. } if !others => Health::default(),
        Report::Refused { outcome } => {
            h.failures += 1;
            h.episode = Some(now);
            h.until = Some(now + ASIDE);
            h.rested_at = Some(now);
            h.reason = Some(outcome);
            h.aside = true;
            h
        }
        Report::Failed { outcome, hint } => {
            let new_episode = h.episode.is_none_or(|began| started >= began);
            if new_episode {
                h.failures += 1;
                h.episode = Some(now);
            }
            let rest = retry::backoff(h.failures, policy, jitter).max(hint.unwrap_or_default());
            h.until = h.until.max(Some(now + rest));
            h.rested_at = Some(now);
            h.reason = Some(outcome);
            h
        }
    }
}

/// The new health of an upstream whose answer, to an attempt that started at `started`, has
/// begun with a success status: a probe is over and others may come, unless the attempt is
/// older than the upstream's latest rest.
pub fn answered(mut h: Health, started: Instant) -> Health {
    if !h.older_than_rest(started) {
        h.probe = None;
        h.until = None;
    }
    h
}

/// The shared health as one request sees it: each upstream's rest lengthened by the
/// request's own rest there, if any.
pub fn with_own_rests(health: &[Health], mine: &[Option<Instant>]) -> Vec<Health> {
    health
        .iter()
        .zip(mine.iter().chain(std::iter::repeat(&None)))
        .map(|(h, own)| Health { until: h.until.max(*own), ..h.clone() })
        .collect()
}

/// The configured upstreams with their shared health.
pub struct Pool {
    pub targets: Vec<Upstream>,
    health: Mutex<Vec<Health>>,
    routing: Routing,
    /// Round-robin: where the next request starts.
    turn: AtomicUsize,
    /// `STICKY_SESSIONS`: a request that names its session keeps to the session's upstream.
    sticky: bool,
    policy: Policy,
    /// A probe older than this is taken for abandoned.
    stale: Duration,
}

impl Pool {
    pub fn new(config: &Config) -> Pool {
        let n = config.upstreams.len();
        Pool {
            targets: config.upstreams.clone(),
            health: Mutex::new(vec![Health::default(); n]),
            routing: config.routing,
            turn: AtomicUsize::new(0),
            sticky: config.sticky_sessions,
            policy: config.retry.clone(),
            stale: config.network.connect_timeout + config.network.idle_timeout,
        }
    }

    /// The order in which a new request looks at the upstreams (see `order`).
    pub fn order(&self, session: Option<&str>) -> Vec<usize> {
        let session = session.filter(|_| self.sticky);
        let turn = match (self.routing, session) {
            (Routing::RoundRobin, None) => self.turn.fetch_add(1, Ordering::Relaxed),
            (Routing::RoundRobin, Some(_)) | (Routing::Failover, _) => 0,
        };
        order(self.routing, session, &self.numbers(), turn)
    }

    fn numbers(&self) -> Vec<usize> {
        self.targets.iter().map(|t| t.number).collect()
    }

    /// Choose an upstream for an attempt now, for a request that keeps its own rests
    /// (`mine`: not before these instants, after it failed there); a chosen upstream that was
    /// resting after failures is marked as probed by this request. Once a probe's answer has
    /// started (`answering`) the rest is over and the next requests go there freely, even
    /// though the breaker's count waits for a whole success to close.
    pub fn choose(&self, order: &[usize], mine: &[Option<Instant>]) -> Choice {
        let now = Instant::now();
        let mut health = self.lock();
        let choice = choose(&with_own_rests(&health, mine), now, order, self.stale);
        if let Choice::Go(i) = choice {
            if health[i].failures > 0 && health[i].until.is_some() {
                health[i].probe = Some(now);
            }
        }
        choice
    }

    /// The upstream at `i` answered an attempt that started at `started` with a success
    /// status (see `answered`).
    pub fn answering(&self, i: usize, started: Instant) {
        let mut health = self.lock();
        let old = std::mem::take(&mut health[i]);
        health[i] = answered(old, started);
    }

    /// Record how an attempt on upstream `i` that started at `started` ended. With a single
    /// upstream there is nowhere else to go and nothing to share: each request keeps its own
    /// rests, as it always did.
    pub fn record(&self, i: usize, report: Report, started: Instant, jitter: f64) {
        let others = self.targets.len() > 1;
        let report = if others || report == Report::Healthy { report } else { Report::Neutral };
        let mut health = self.lock();
        let old = std::mem::take(&mut health[i]);
        health[i] = update(old, report, started, Instant::now(), others, &self.policy, jitter);
    }

    /// Whether an upstream other than `i` is not put aside (so a refusal by `i` may be
    /// answered elsewhere).
    pub fn has_alternative(&self, i: usize) -> bool {
        let now = Instant::now();
        let health = self.lock();
        health.iter().enumerate().any(|(j, h)| j != i && !(h.aside && h.cooling(now)))
    }

    /// How long a request looking in `order` would wait for an upstream now (zero if one
    /// is ready), for the log line.
    pub fn wait_hint(&self, order: &[usize], mine: &[Option<Instant>]) -> Duration {
        match choose(&with_own_rests(&self.lock(), mine), Instant::now(), order, self.stale) {
            Choice::Go(_) => Duration::ZERO,
            Choice::Wait(wait) => wait,
        }
    }

    /// Why no upstream is ready: the reason of the one ready soonest, and how long until then.
    pub fn resting(&self) -> (Option<Outcome>, Duration) {
        let now = Instant::now();
        let health = self.lock();
        let soonest = health.iter().filter(|h| h.cooling(now)).min_by_key(|h| h.until);
        soonest.map_or((None, Duration::ZERO), |h| {
            (h.reason, h.until.map_or(Duration::ZERO, |u| u.saturating_duration_since(now)))
        })
    }

    /// A copy of every upstream's health (for `/status` and the metrics).
    pub fn snapshot(&self) -> Vec<Health> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Health>> {
        crate::sync::lock(&self.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::failure;

    fn policy() -> Policy {
        Policy::for_tests()
    }

    const STALE: Duration = Duration::from_secs(130);

    fn resting(now: Instant, secs: u64) -> Health {
        Health { until: Some(now + Duration::from_secs(secs)), failures: 1, ..Health::default() }
    }

    #[test]
    fn choices() {
        let now = Instant::now();
        let ok = Health::default;
        let probed = || Health { probe: Some(now), failures: 1, ..Health::default() };
        let stale_probe = || Health { probe: Some(now - STALE), failures: 1, ..Health::default() };
        let ms = Duration::from_millis;
        let cases: Vec<(&str, Vec<Health>, usize, Choice)> = vec![
            ("one healthy", vec![ok()], 0, Choice::Go(0)),
            ("first healthy wins", vec![ok(), ok()], 0, Choice::Go(0)),
            ("round-robin start", vec![ok(), ok(), ok()], 2, Choice::Go(2)),
            ("first resting", vec![resting(now, 30), ok()], 0, Choice::Go(1)),
            ("wrap around", vec![ok(), resting(now, 30)], 1, Choice::Go(0)),
            ("all resting: earliest", vec![resting(now, 30), resting(now, 2)], 0, Choice::Wait(ms(2000))),
            ("rest over", vec![Health { until: Some(now), ..Health::default() }], 0, Choice::Go(0)),
            ("probed by another", vec![probed()], 0, Choice::Wait(PROBE_POLL)),
            ("probed, other resting", vec![probed(), resting(now, 5)], 0, Choice::Wait(PROBE_POLL)),
            ("probed, other free", vec![probed(), ok()], 0, Choice::Go(1)),
            ("stale probe", vec![stale_probe()], 0, Choice::Go(0)),
        ];
        for (name, health, start, expected) in cases {
            let rotation = order(Routing::RoundRobin, None, &vec![1; health.len()], start);
            assert_eq!(choose(&health, now, &rotation, STALE), expected, "{name}");
        }
    }

    /// The order a request looks in: failover from upstream 1, round-robin from its turn, a
    /// named session by its own ranking; then the choice made in it: a session stays on its
    /// upstream over 100 turns under round-robin, and moves only while that upstream rests.
    #[test]
    fn orders_and_sticky_choices() {
        let rr = Routing::RoundRobin;
        // (name, routing, session, turn, expected order)
        type Case<'a> = (&'a str, Routing, Option<&'a str>, usize, Vec<usize>);
        let cases: Vec<Case> = vec![
            ("failover", Routing::Failover, None, 5, vec![0, 1, 2]),
            ("failover ignores sessions", Routing::Failover, Some("s"), 5, vec![0, 1, 2]),
            ("round-robin turn", rr, None, 4, vec![1, 2, 0]),
            ("a session's ranking", rr, Some("s"), 4, session::ranked("s", &[1, 2, 3])),
        ];
        for (name, routing, key, turn, expected) in cases {
            assert_eq!(order(routing, key, &[1, 2, 3], turn), expected, "{name}");
        }
        let now = Instant::now();
        let healthy = vec![Health::default(); 3];
        let mut second_rests = healthy.clone();
        second_rests[1] = resting(now, 30);
        for s in 0..30 {
            let key = format!("thread-{s}");
            let mine = order(rr, Some(&key), &[1, 2, 3], 0);
            let home = mine[0];
            for turn in 0..100 {
                let o = order(rr, Some(&key), &[1, 2, 3], turn);
                assert_eq!(choose(&healthy, now, &o, STALE), Choice::Go(home), "{key}, turn {turn}");
            }
            let elsewhere = if home == 1 { mine[1] } else { home };
            assert_eq!(
                choose(&second_rests, now, &mine, STALE),
                Choice::Go(elsewhere),
                "{key} while 2 rests"
            );
            assert_eq!(choose(&healthy, now, &mine, STALE), Choice::Go(home), "{key}: back after the rest");
        }
    }

    fn failed(outcome: Outcome, hint: Option<u64>) -> Report {
        Report::Failed { outcome, hint: hint.map(Duration::from_secs) }
    }

    /// (name, failures before, attempt began before the episode?, report, others, expected
    /// failures after, expected rest in seconds)
    #[test]
    fn updates() {
        let now = Instant::now();
        let earlier = now - Duration::from_secs(10);
        type Case = (&'static str, u32, bool, Report, bool, u32, Option<u64>);
        let cases: Vec<Case> = vec![
            ("429 with hint", 0, false, failed(Outcome::RateLimited, Some(30)), false, 1, Some(30)),
            ("429 without hint", 0, false, failed(Outcome::RateLimited, None), false, 1, Some(1)),
            ("second episode doubles", 1, false, failed(Outcome::Connect, None), false, 2, Some(2)),
            ("breaker grows to the cap", 6, false, failed(Outcome::ServerError, None), false, 7, Some(8)),
            ("same episode counts once", 1, true, failed(Outcome::Cut, None), false, 1, Some(1)),
            ("hint beats backoff", 3, false, failed(Outcome::RateLimited, Some(20)), false, 4, Some(20)),
            ("success closes", 5, false, Report::Healthy, true, 0, None),
            (
                "refused, others exist",
                0,
                false,
                Report::Refused { outcome: Outcome::Final },
                true,
                1,
                Some(300),
            ),
            ("refused, alone", 2, false, Report::Refused { outcome: Outcome::Final }, false, 0, None),
        ];
        for (name, failures, same_episode, report, others, after, rest) in cases {
            let before = Health {
                failures,
                episode: (failures > 0).then_some(if same_episode {
                    now - Duration::from_secs(1)
                } else {
                    earlier
                }),
                ..Health::default()
            };
            let started = if same_episode { earlier } else { now };
            let h = update(before, report, started, now, others, &policy(), 0.5);
            let rest_got = h.until.map(|u| u.saturating_duration_since(now).as_secs_f64().round() as u64);
            assert_eq!((h.failures, rest_got), (after, rest), "{name}");
            assert_eq!(h.probe, None, "{name}: a report ends the probe");
            assert_eq!(h.rested_at, rest.map(|_| now), "{name}: when the rest was set");
        }
    }

    /// A success lifts a rest only when its attempt started after the rest was set: with many
    /// requests in flight, one that was already under way when a 429 came back must not
    /// send the next requests into the rest the 429 asked for.
    #[test]
    fn older_successes_keep_the_rest() {
        let now = Instant::now();
        let set = now - Duration::from_secs(1);
        let rate_limited = Health {
            until: Some(now + Duration::from_secs(29)),
            failures: 1,
            episode: Some(set),
            rested_at: Some(set),
            reason: Some(Outcome::RateLimited),
            ..Health::default()
        };
        let ms = Duration::from_millis;
        // (name, health, attempt started, rest kept after its head, and after its whole answer)
        let cases = [
            ("started before the 429", rate_limited.clone(), set - ms(5), true),
            ("started after the 429", rate_limited.clone(), set + ms(5), false),
            ("never rested", Health::default(), set, false),
        ];
        for (name, health, started, kept) in cases {
            let head = answered(health.clone(), started);
            assert_eq!(head.cooling(now), kept, "{name}: head");
            let whole = update(health.clone(), Report::Healthy, started, now, true, &policy(), 0.5);
            assert_eq!(whole.cooling(now), kept, "{name}: whole answer");
            assert_eq!(whole.failures, if kept { health.failures } else { 0 }, "{name}: breaker count");
        }
    }

    /// One request probes an upstream whose rest is over; once the probe's answer has
    /// started, the others are not held back one at a time.
    #[test]
    fn one_probe_then_everyone() {
        let now = Instant::now();
        let rested = Health {
            until: Some(now - Duration::from_millis(1)),
            failures: 2,
            episode: Some(now - Duration::from_secs(1)),
            rested_at: Some(now - Duration::from_secs(1)),
            ..Health::default()
        };
        let pool = Pool {
            targets: vec![],
            health: Mutex::new(vec![rested]),
            routing: Routing::Failover,
            turn: AtomicUsize::new(0),
            sticky: true,
            policy: policy(),
            stale: STALE,
        };
        assert_eq!(pool.choose(&[0], &[]), Choice::Go(0), "the probe");
        assert_eq!(pool.choose(&[0], &[]), Choice::Wait(PROBE_POLL), "the others wait for it");
        pool.answering(0, Instant::now());
        let after: Vec<Choice> = (0..3).map(|_| pool.choose(&[0], &[])).collect();
        assert_eq!(after, vec![Choice::Go(0); 3], "its answer started: everyone may come");
        assert_eq!(pool.snapshot()[0].failures, 2, "the count waits for a whole success");
    }

    fn in_stream(hint: Option<u64>) -> Error {
        Error::InStream(crate::error::StreamError {
            code: Some("rate_limit_exceeded".into()),
            kind: None,
            message: "slow down".into(),
            retryable: true,
            hint: hint.map(Duration::from_secs),
        })
    }

    #[test]
    fn reports_from_errors() {
        use crate::error::Rejection;
        let status = |code: u16, body: &str| {
            Error::Status(Rejection {
                status: code,
                content_type: None,
                body: body.as_bytes().to_vec(),
                headers: vec![],
                hint: Some(Duration::from_secs(7)),
            })
        };
        let cases: Vec<(Error, Report)> = vec![
            (status(429, ""), failed(Outcome::RateLimited, Some(7))),
            (status(503, ""), failed(Outcome::ServerError, Some(7))),
            (status(400, ""), Report::Healthy),
            (status(401, ""), Report::Refused { outcome: Outcome::Final }),
            (status(403, ""), Report::Refused { outcome: Outcome::Final }),
            (status(404, ""), Report::Refused { outcome: Outcome::Final }),
            (
                status(429, r#"{"error":{"code":"insufficient_quota","message":"pay"}}"#),
                Report::Refused { outcome: Outcome::Final },
            ),
            (Error::Connect("refused".into()), failed(Outcome::Connect, None)),
            (Error::ResponseTooLarge { limit: 1 }, Report::Neutral),
            (Error::Truncated { received: 9, reason: "eof".into() }, Report::Local),
            (Error::Stalled { received: 9 }, Report::Local),
            (in_stream(None), Report::Local),
            (in_stream(Some(20)), failed(Outcome::InStream, Some(20))),
        ];
        for (err, expected) in cases {
            assert_eq!(Report::of(&failure::judge(&err)), expected, "{err:?}");
        }
    }
}
