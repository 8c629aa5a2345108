//! The memory budget and the bytes held against it, as Envoy's overload manager does it: the
//! proxy knows how much memory it may use, counts what its requests and answers hold, and
//! refuses new work (503, `retry-after`) before the kernel kills the process with every
//! answer in it.
//!
//! The budget is the cgroup's memory limit when there is one (`memory.max`, cgroup v2;
//! `memory.limit_in_bytes`, v1), unless `MEMORY_BUDGET_MB` sets it (or turns it off). Held
//! bytes are counted in two ways: a request is charged a multiple of its body when it is
//! admitted (what parsing, preparing and translating it cost at most, measured by
//! `tests/torture/memory.sh`), for as long as it runs (`Hold`); an answer's bytes are counted
//! by `body.rs` as its chunks are allocated and freed (a chat answer to be translated, which
//! is folded as it is read instead of kept, by what its fold holds: `Hold::raise_to`). A new
//! request is admitted only while what is held, its own charge included, stays under `ADMIT`
//! of the budget; an answer being read fails (`Overdrawn`) rather than take the held bytes
//! over `HARD` of it. The rest of the budget is for what is not counted: the program, its
//! threads, the allocator's slack.
//!
//! The two counters are process-wide atomics (one proxy per process); the decisions
//! (`admits`, `overdraws`, `Setting`, `cgroup_limit`) are pure functions. Only `resolve` reads
//! files (the cgroup's, at start-up).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The budget in bytes; 0 is none.
static BUDGET: AtomicUsize = AtomicUsize::new(0);
/// Bytes held by requests and answers.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// New requests are admitted while the held bytes, theirs included, stay under this share of
/// the budget (percent).
pub const ADMIT: usize = 50;
/// An answer being read may not take the held bytes over this share of the budget (percent).
pub const HARD: usize = 75;
/// What a request is charged, in multiples of its body: at most 3x when passed on as it
/// came, 5x when translated to chat (measured peaks: see `docs/limits.md`).
pub const PASS_THROUGH_COST: usize = 3;
pub const TRANSLATED_COST: usize = 5;
/// What turning a complete answer into the client's form holds for a moment, in multiples
/// of the answer, besides the answer itself (measured: the answer and its copies peak at 2x
/// for the `response` or `chat.completion` object of a client that asked for JSON, at 8x for
/// the Responses stream and object made from a chat answer: the folded text, its delta and
/// done events, the `response` object as a value and as text; its bytes are not kept).
pub const ASSEMBLED_ANSWER_COST: usize = 2;
pub const TRANSLATED_ANSWER_COST: usize = 9;

/// `MEMORY_BUDGET_MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The cgroup's memory limit, if the process has one; otherwise no budget.
    Auto,
    /// No budget: nothing is refused for memory.
    Off,
    /// This many MiB.
    Mib(u64),
}

impl Setting {
    /// `auto`, `off` (or `0`), or a whole number of MiB.
    pub fn parse(raw: &str) -> Option<Setting> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Setting::Auto),
            "off" | "0" => Some(Setting::Off),
            n => n.parse().ok().filter(|&n: &u64| n < 1 << 40).map(Setting::Mib),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Setting::Auto => "auto (the cgroup's memory limit, if any)".into(),
            Setting::Off => "off".into(),
            Setting::Mib(n) => format!("{n} MiB"),
        }
    }
}

/// The budget in bytes (0: none) for `setting`, given the cgroup files' contents (v2
/// `memory.max`, then v1 `memory.limit_in_bytes`).
pub fn budget_of(setting: Setting, v2: Option<&str>, v1: Option<&str>) -> usize {
    match setting {
        Setting::Off => 0,
        Setting::Mib(n) => (n as usize).saturating_mul(1 << 20),
        Setting::Auto => v2.and_then(cgroup_limit).or_else(|| v1.and_then(cgroup_limit)).unwrap_or(0),
    }
}

/// A cgroup memory limit file's value in bytes; `None` for no limit (`max` in v2, the huge
/// page-rounded maximum in v1) or an unreadable value.
pub fn cgroup_limit(text: &str) -> Option<usize> {
    let n: u64 = text.trim().parse().ok()?;
    (n > 0 && n < 1 << 60).then_some(n as usize)
}

/// Resolve `setting` (reading the cgroup's files for `auto`) and make it the budget.
pub fn start(setting: Setting) {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let v2 = read("/sys/fs/cgroup/memory.max");
    let v1 = read("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    let budget = budget_of(setting, v2.as_deref(), v1.as_deref());
    BUDGET.store(budget, Ordering::Relaxed);
    match budget {
        0 => crate::info!("memory budget: none ({})", setting.describe()),
        b => crate::info!(
            "memory budget: {} MiB ({}); new requests get 503 above {ADMIT}% held, answers fail above {HARD}%",
            b >> 20,
            setting.describe()
        ),
    }
}

/// The budget in bytes (0: none).
pub fn budget() -> usize {
    BUDGET.load(Ordering::Relaxed)
}

/// The bytes held by requests and answers now.
pub fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// Refused for memory: what was held and the budget, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overdrawn {
    pub held: usize,
    pub budget: usize,
}

/// Whether a new request charged `charge` may start while `held` is held.
pub fn admits(held: usize, charge: usize, budget: usize) -> bool {
    budget == 0 || held.saturating_add(charge) <= budget / 100 * ADMIT
}

/// Whether `more` bytes for an answer would take `held` over the hard limit.
pub fn overdraws(held: usize, more: usize, budget: usize) -> bool {
    budget != 0 && held.saturating_add(more) > budget / 100 * HARD
}

/// Bytes counted as held until dropped: a request's charge.
#[derive(Debug, Default)]
pub struct Hold(usize);

impl Hold {
    /// Charge `bytes` for a new request, if `admits` allows it now.
    pub fn admit(bytes: usize) -> Result<Hold, Overdrawn> {
        let budget = budget();
        HELD.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
            admits(held, bytes, budget).then_some(held + bytes)
        })
        .map(|_| Hold(bytes))
        .map_err(|held| Overdrawn { held, budget })
    }

    /// Charge `bytes` for work on an answer already in, unless that takes the held bytes over
    /// the hard limit.
    pub fn reserve(bytes: usize) -> Result<Hold, Overdrawn> {
        try_add(bytes).map(|()| Hold(bytes))
    }

    /// Charge `bytes` more, if `admits` allows it (a body whose size was not known before).
    pub fn grow(&mut self, bytes: usize) -> Result<(), Overdrawn> {
        let more = Hold::admit(bytes)?;
        self.0 += more.0;
        std::mem::forget(more);
        Ok(())
    }

    /// Charge up to `bytes` for an answer being read, as `Body::try_push` does: the growth, unless
    /// it takes the held bytes over the hard limit (then the charge stays as it was).
    pub fn raise_to(&mut self, bytes: usize) -> Result<(), Overdrawn> {
        let more = bytes.saturating_sub(self.0);
        if more > 0 {
            try_add(more)?;
            self.0 += more;
        }
        Ok(())
    }

    pub fn bytes(&self) -> usize {
        self.0
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        HELD.fetch_sub(self.0, Ordering::SeqCst);
    }
}

/// Count `bytes` of an answer as held (`body.rs`), whatever the budget.
pub fn add(bytes: usize) {
    HELD.fetch_add(bytes, Ordering::SeqCst);
}

/// Count `bytes` of an answer as held, unless that takes the total over the hard limit.
pub fn try_add(bytes: usize) -> Result<(), Overdrawn> {
    let budget = budget();
    HELD.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
        (!overdraws(held, bytes, budget)).then_some(held + bytes)
    })
    .map(|_| ())
    .map_err(|held| Overdrawn { held, budget })
}

/// Bytes of an answer freed.
pub fn sub(bytes: usize) {
    HELD.fetch_sub(bytes, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings() {
        let cases = [
            ("auto", Some(Setting::Auto)),
            (" AUTO ", Some(Setting::Auto)),
            ("off", Some(Setting::Off)),
            ("0", Some(Setting::Off)),
            ("512", Some(Setting::Mib(512))),
            ("-1", None),
            ("1.5", None),
            ("lots", None),
            ("", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(Setting::parse(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn budgets_from_the_cgroup_or_the_setting() {
        const MIB: usize = 1 << 20;
        let cases: &[(Setting, Option<&str>, Option<&str>, usize)] = &[
            (Setting::Auto, Some("536870912\n"), None, 512 * MIB),
            (Setting::Auto, Some("max\n"), None, 0),
            (Setting::Auto, None, Some("268435456\n"), 256 * MIB),
            (Setting::Auto, None, Some("9223372036854771712\n"), 0), // v1's "no limit"
            (Setting::Auto, Some("max\n"), Some("268435456\n"), 256 * MIB),
            (Setting::Auto, None, None, 0),
            (Setting::Auto, Some("garbage"), None, 0),
            (Setting::Mib(64), Some("536870912\n"), None, 64 * MIB),
            (Setting::Off, Some("536870912\n"), None, 0),
        ];
        for (setting, v2, v1, expected) in cases {
            assert_eq!(budget_of(*setting, *v2, *v1), *expected, "{setting:?} {v2:?} {v1:?}");
        }
    }

    #[test]
    fn thresholds() {
        let budget = 1000;
        let cases: &[(usize, usize, bool, bool)] = &[
            // held, more: admitted as a request, overdraws as an answer
            (0, 500, true, false),
            (0, 501, false, false),
            (400, 100, true, false),
            (400, 101, false, false),
            (700, 50, false, false),
            (700, 51, false, true),
            (usize::MAX, 1, false, true),
        ];
        for &(held, more, admitted, over) in cases {
            assert_eq!(
                (admits(held, more, budget), overdraws(held, more, budget)),
                (admitted, over),
                "{held}+{more}"
            );
            assert_eq!((admits(held, more, 0), overdraws(held, more, 0)), (true, false), "no budget");
        }
    }
}
