//! Client keys from `CLIENT_KEYS_FILE`: one key per person or service, each with a name that
//! the log line, `/metrics` and `/status` show (never the key), and an optional limit on the
//! requests it has in flight at once.
//!
//! `parse` is pure: the file's text → `Keys`, or the first malformed line, by number. `Keys`
//! checks a presented key against every entry without an early exit (a `sha256:` entry by the
//! digest of the presented key), so timing tells nothing about which entry, or how much of
//! one, matched. `Store` holds the keys in effect behind an `Arc` swapped whole on reload, and
//! `watch` re-reads the file when its inode, size or modification time changes (checked
//! every second, no inotify): a request checks against the set in effect when it arrived, and
//! a malformed file at reload keeps the previous set. `Limiter` counts each name's requests in
//! flight. This module does not read requests (`inbound.rs` hands it the credentials) nor
//! write the refusals (`reply.rs`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::inbound::{constant_time_eq, Credentials};

/// How often `watch` looks at the file.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);
/// A version of the file is read once it has not changed for this long: a file rewritten in
/// place is not read between its truncation and its last write.
pub const QUIET: Duration = Duration::from_millis(100);
/// Longest name: a label value and a log field, kept short.
pub const MAX_NAME: usize = 64;

/// One line of the file.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Arc<str>,
    secret: Secret,
    /// `max=N`: at most N requests in flight at once.
    pub max: Option<usize>,
}

/// A key as the file holds it.
#[derive(Clone, PartialEq, Eq)]
enum Secret {
    Plain(Vec<u8>),
    Sha256([u8; 32]),
}

impl fmt::Debug for Entry {
    /// The name and limit only: a key never reaches a debug print either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry").field("name", &self.name).field("max", &self.max).finish_non_exhaustive()
    }
}

/// The keys of one version of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub entries: Vec<Entry>,
}

/// Why a line of the file was refused (`line` counts from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// The file's text as keys: `name: key [max=N]` or `name: sha256:<64 hex digits> [max=N]` per
/// line; blank lines and lines starting with `#` are skipped, and so is a `#` word after the
/// key and what follows it. Names are unique, and so are keys.
pub fn parse(text: &str) -> Result<Keys, Malformed> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut seen: HashMap<Arc<str>, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let bad = |reason: String| Malformed { line: number, reason };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = parse_line(line).map_err(bad)?;
        if let Some(first) = seen.get(&entry.name) {
            return Err(bad(format!("the name {:?} is already on line {first}", entry.name)));
        }
        if let Some(twin) = entries.iter().find(|e| e.secret == entry.secret) {
            return Err(bad(format!("the same key as {:?}", twin.name)));
        }
        seen.insert(Arc::clone(&entry.name), number);
        entries.push(entry);
    }
    Ok(Keys { entries })
}

/// One line that is neither blank nor a comment.
fn parse_line(line: &str) -> Result<Entry, String> {
    let Some((name, rest)) = line.split_once(':') else {
        return Err("expected `name: key` (no `:` found)".into());
    };
    let name = name.trim();
    check_name(name)?;
    let mut words = rest.split_whitespace().take_while(|w| !w.starts_with('#'));
    let key = words.next().ok_or_else(|| format!("no key after {name:?}"))?;
    let secret = match key.strip_prefix("sha256:") {
        Some(hex) => Secret::Sha256(digest_hex(hex)?),
        None => Secret::Plain(key.as_bytes().to_vec()),
    };
    let mut max = None;
    for word in words {
        let value = word.strip_prefix("max=").ok_or_else(|| {
            format!("unexpected {:?} after the key (expected `max=N`, or `#` and a comment)", shown(word))
        })?;
        match value.parse::<usize>() {
            Ok(n) if n > 0 && max.is_none() => max = Some(n),
            Ok(_) if max.is_some() => return Err("`max=` given twice".into()),
            _ => return Err(format!("`max=` wants a whole number above 0, got {:?}", shown(value))),
        }
    }
    Ok(Entry { name: name.into(), secret, max })
}

/// A word of a malformed line as an error may quote it: its first 4 characters, in case it
/// was a key.
fn shown(word: &str) -> String {
    match word.chars().count() {
        0..=4 => word.to_string(),
        _ => word.chars().take(4).chain("…".chars()).collect(),
    }
}

/// Names become label values and log fields: letters, digits, `.`, `_`, `-`, `@`, at most
/// `MAX_NAME` of them; `-` alone is the label of requests without a name.
fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    match name {
        "" => Err("the name before `:` is empty".into()),
        "-" => Err("`-` is reserved (requests without a name)".into()),
        _ if name.len() > MAX_NAME => Err(format!("the name is longer than {MAX_NAME} characters")),
        // Not quoted: a key written in the wrong place must not reach the log.
        _ if !name.chars().all(allowed) => {
            Err("a name may hold only letters, digits, `.`, `_`, `-` and `@`".into())
        }
        _ => Ok(()),
    }
}

/// The 32 bytes of a `sha256:` entry.
fn digest_hex(hex: &str) -> Result<[u8; 32], String> {
    let wrong = || format!("`sha256:` wants 64 hex digits, got {} characters", hex.chars().count());
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(wrong());
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| wrong())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| wrong())?;
    }
    Ok(out)
}

/// SHA-256 of a presented key, as a `sha256:` entry holds it.
pub fn sha256(key: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl Keys {
    /// The entry whose key is among `offered`, comparing every offered key with every entry.
    pub fn identify(&self, offered: &[&[u8]]) -> Option<&Entry> {
        let hashed = self.entries.iter().any(|e| matches!(e.secret, Secret::Sha256(_)));
        let digests: Vec<[u8; 32]> =
            offered.iter().map(|k| if hashed { sha256(k) } else { [0; 32] }).collect();
        let found = matching(&self.entries, offered.len(), |entry, i| match &entry.secret {
            Secret::Plain(key) => constant_time_eq(offered[i], key),
            Secret::Sha256(digest) => constant_time_eq(&digests[i], digest),
        });
        found.map(|i| &self.entries[i])
    }

    /// The entry for a request's credentials (Bearer or `api-key`).
    pub fn of(&self, c: &Credentials) -> Option<&Entry> {
        let offered: Vec<&[u8]> =
            [&c.bearer, &c.api_key].into_iter().flatten().map(|k| k.as_bytes()).collect();
        self.identify(&offered)
    }

    /// The limit of the entry named `name`, if it is still in this set.
    pub fn max(&self, name: &str) -> Option<usize> {
        self.entries.iter().find(|e| &*e.name == name).and_then(|e| e.max)
    }
}

/// The index of the (last) entry that `eq` accepts for one of `offered` keys. `eq` is called
/// for every entry and every offered key, a match or not: no early exit.
fn matching(entries: &[Entry], offered: usize, mut eq: impl FnMut(&Entry, usize) -> bool) -> Option<usize> {
    let mut found = None;
    for (e, entry) in entries.iter().enumerate() {
        for i in 0..offered {
            let hit = eq(entry, i);
            found = [found, Some(e)][usize::from(hit)];
        }
    }
    found
}

/// Who the client is, once its key is checked.
pub fn check(
    proxy_key: Option<&str>,
    keys: Option<&Keys>,
    c: &Credentials,
) -> Result<Option<Arc<str>>, Error> {
    if proxy_key.is_none() && keys.is_none() {
        return Ok(None);
    }
    let named = keys.and_then(|k| k.of(c)).map(|e| Arc::clone(&e.name));
    let by_proxy_key = proxy_key.is_some_and(|key| c.present(key));
    match (named, by_proxy_key) {
        (Some(name), _) => Ok(Some(name)),
        (None, true) => Ok(None),
        (None, false) => Err(Error::Unauthorized),
    }
}

/// What identifies a version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    inode: u64,
    size: u64,
    modified: SystemTime,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp { dev: m.dev(), inode: m.ino(), size: m.size(), modified: m.modified()? })
}

/// The version of the file the last look found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// None yet.
    Nothing,
    Version(Stamp),
    /// No file, or one that cannot be read.
    Unreadable,
}

/// What a look at the file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The same file as last time.
    Unchanged,
    /// A new version, now in effect, with this many keys.
    Loaded(usize),
    /// A new version that cannot be used: the previous keys stay (why).
    Kept(String),
}

/// The keys in effect, and the file they come from.
pub struct Store {
    path: Option<PathBuf>,
    current: Mutex<Option<Arc<Keys>>>,
    seen: Mutex<Seen>,
}

impl Store {
    /// The keys of `path` at start-up; a malformed or unreadable file is a configuration error
    /// naming its line. No path: no keys.
    pub fn open(path: Option<&Path>) -> Result<Store, Error> {
        let store = Store {
            path: path.map(Path::to_path_buf),
            current: Mutex::new(None),
            seen: Mutex::new(Seen::Nothing),
        };
        match store.reload(SystemTime::now(), Duration::ZERO) {
            Reload::Kept(reason) => Err(Error::Config { var: "CLIENT_KEYS_FILE".into(), reason }),
            Reload::Unchanged | Reload::Loaded(_) => Ok(store),
        }
    }

    /// The keys in effect (`None` without `CLIENT_KEYS_FILE`).
    pub fn current(&self) -> Option<Arc<Keys>> {
        crate::sync::lock(&self.current).clone()
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Read the file again if it changed and has been left alone for `quiet` at `now`; the
    /// new keys take effect for the requests that arrive from then on. A version still being
    /// written (younger than `quiet`, or changed during the read) is read at a later look.
    pub fn reload(&self, now: SystemTime, quiet: Duration) -> Reload {
        let Some(path) = &self.path else {
            return Reload::Unchanged;
        };
        let describe = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let before = match stamp(path) {
            Ok(s) => s,
            Err(e) => return self.refuse(Seen::Unreadable, describe(e)),
        };
        let young = now.duration_since(before.modified).map_or(true, |age| age < quiet);
        if *crate::sync::lock(&self.seen) == Seen::Version(before) || young {
            return Reload::Unchanged;
        }
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => return self.refuse(Seen::Unreadable, describe(e)),
        };
        if stamp(path).ok() != Some(before) {
            return Reload::Unchanged;
        }
        let seen = Seen::Version(before);
        let keys = match parse(&text) {
            Ok(keys) => keys,
            Err(malformed) => return self.refuse(seen, format!("{}: {malformed}", path.display())),
        };
        let n = keys.entries.len();
        *crate::sync::lock(&self.current) = Some(Arc::new(keys));
        *crate::sync::lock(&self.seen) = seen;
        Reload::Loaded(n)
    }

    /// A version that cannot be used, reported once.
    fn refuse(&self, now: Seen, reason: String) -> Reload {
        let mut seen = crate::sync::lock(&self.seen);
        if *seen == now {
            return Reload::Unchanged;
        }
        *seen = now;
        Reload::Kept(reason)
    }
}

/// Look at the file every `WATCH_EVERY` and log what changed, for the life of the process.
pub fn watch(store: Arc<Store>) {
    std::thread::spawn(move || loop {
        std::thread::sleep(WATCH_EVERY);
        match store.reload(SystemTime::now(), QUIET) {
            Reload::Unchanged => {}
            Reload::Loaded(n) => crate::info!("CLIENT_KEYS_FILE reloaded: {n} key(s) in effect"),
            Reload::Kept(reason) => {
                crate::error!("CLIENT_KEYS_FILE not reloaded, the previous keys stay: {reason}")
            }
        }
    });
}

/// Each name's requests in flight, against its `max=`.
#[derive(Debug, Default)]
pub struct Limiter {
    counts: Mutex<HashMap<Arc<str>, usize>>,
}

/// One request counted against its name until dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a Limiter,
    name: Arc<str>,
}

impl Limiter {
    /// Count a request of `name`, unless it already has `max` in flight.
    pub fn acquire(&self, name: &Arc<str>, max: Option<usize>) -> Result<Permit<'_>, Error> {
        let mut counts = crate::sync::lock(&self.counts);
        let n = counts.entry(Arc::clone(name)).or_insert(0);
        if let Some(limit) = max.filter(|&limit| *n >= limit) {
            return Err(Error::ClientLimit { limit });
        }
        *n += 1;
        Ok(Permit { limiter: self, name: Arc::clone(name) })
    }

    /// Requests in flight by name (names with none are not listed).
    pub fn in_flight(&self) -> Vec<(Arc<str>, usize)> {
        crate::sync::lock(&self.counts).iter().map(|(k, &v)| (Arc::clone(k), v)).collect()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut counts = crate::sync::lock(&self.limiter.counts);
        if let Some(n) = counts.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE_SHA: &str = "sha256:8fab151ebfe45da0ce0c2a951f8bba063f8668389b08a793acf59f301a6dbd57";

    /// Each file, and what it parses to: names and limits in order, or the line and reason.
    #[test]
    fn files_parsed_or_refused_by_line() {
        type Parsed = Result<Vec<(&'static str, Option<usize>)>, (usize, &'static str)>;
        let cases: Vec<(String, Parsed)> = vec![
            ("".into(), Ok(vec![])),
            ("# team keys\n\n   \nalice: k-alice\n".into(), Ok(vec![("alice", None)])),
            (
                "alice: k-alice max=4\r\nci-bot@build: k-ci\n".into(),
                Ok(vec![("alice", Some(4)), ("ci-bot@build", None)]),
            ),
            (format!("alice: {ALICE_SHA}"), Ok(vec![("alice", None)])),
            ("  bob :  k-bob   # laptop\n".into(), Ok(vec![("bob", None)])),
            ("bob: k-bob max=2 # two at once\n".into(), Ok(vec![("bob", Some(2))])),
            ("alice k-alice\n".into(), Err((1, "no `:` found"))),
            ("# c\nalice: k1\n: k2\n".into(), Err((3, "name before `:` is empty"))),
            ("alice:\n".into(), Err((1, "no key after \"alice\""))),
            ("alice: # no key\n".into(), Err((1, "no key"))),
            ("al ice: k\n".into(), Err((1, "may hold only letters"))),
            ("al\"ice: k\n".into(), Err((1, "may hold only letters"))),
            ("-: k\n".into(), Err((1, "reserved"))),
            (format!("{}: k\n", "a".repeat(65)), Err((1, "longer than 64"))),
            ("alice: sha256:abc\n".into(), Err((1, "64 hex digits, got 3"))),
            (format!("alice: sha256:{}\n", "g".repeat(64)), Err((1, "64 hex digits"))),
            ("alice: k max=0\n".into(), Err((1, "above 0"))),
            ("alice: k max=lots\n".into(), Err((1, "above 0, got \"lots\""))),
            ("alice: k max=12345678\n".into(), Ok(vec![("alice", Some(12345678))])),
            ("alice: k max=x12345678\n".into(), Err((1, "got \"x123…\""))),
            ("alice sk-secret: k\n".into(), Err((1, "may hold only letters"))),
            ("alice: k max=1 max=2\n".into(), Err((1, "given twice"))),
            ("alice: k-alice sk-stray-secret-here\n".into(), Err((1, "unexpected \"sk-s…\""))),
            ("alice: k1\n\nalice: k2\n".into(), Err((3, "already on line 1"))),
            ("alice: k1\nbob: k1\n".into(), Err((2, "same key as \"alice\""))),
        ];
        for (text, expected) in cases {
            let got = parse(&text);
            match (&expected, &got) {
                (Ok(names), Ok(keys)) => {
                    let got: Vec<(&str, Option<usize>)> =
                        keys.entries.iter().map(|e| (&*e.name, e.max)).collect();
                    assert_eq!(&got, names, "{text:?}");
                }
                (Err((line, reason)), Err(m)) => {
                    assert_eq!(m.line, *line, "{text:?}: {m}");
                    assert!(m.reason.contains(reason), "{text:?}: {m}");
                    assert!(!m.reason.contains("secret"), "no key quoted: {m}");
                }
                _ => panic!("{text:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    /// Plain and hashed entries each accept their key and only it, by Bearer or api-key.
    #[test]
    fn keys_identify_their_names() {
        assert_eq!(
            ALICE_SHA[7..],
            hex(&sha256(b"k-alice")),
            "the digest `printf %s k-alice | sha256sum` prints"
        );
        let keys = parse(&format!("alice: {ALICE_SHA}\nbob: k-bob max=1\n")).unwrap();
        let cases: [(&[&[u8]], Option<&str>); 7] = [
            (&[b"k-alice"], Some("alice")),
            (&[b"k-bob"], Some("bob")),
            (&[b"wrong", b"k-bob"], Some("bob")),
            (&[b"k-bo"], None),
            (&[b"k-bob2"], None),
            (&[ALICE_SHA.as_bytes()], None),
            (&[], None),
        ];
        for (offered, expected) in cases {
            assert_eq!(keys.identify(offered).map(|e| &*e.name), expected, "{offered:?}");
        }
        assert_eq!((keys.max("bob"), keys.max("alice"), keys.max("carol")), (Some(1), None, None));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Every entry is compared with every offered key, wherever the match is: no early exit.
    #[test]
    fn every_entry_is_compared() {
        let keys = parse("a: k1\nb: k2\nc: k3\nd: k4\n").unwrap();
        for (target, expected) in [(0, Some(0)), (2, Some(2)), (3, Some(3)), (9, None)] {
            let mut calls = 0;
            let found = matching(&keys.entries, 2, |entry, i| {
                calls += 1;
                i == 1 && keys.entries.get(target) == Some(entry)
            });
            assert_eq!((found, calls), (expected, 8), "match at {target}");
        }
    }

    /// Who a request is: a named key, PROXY_API_KEY beside the file or alone, or nobody.
    #[test]
    fn who_the_client_is() {
        let keys = parse("alice: k-alice\n").unwrap();
        let c = |k: &str| Credentials { bearer: Some(k.into()), ..Credentials::default() };
        let name = |r: Result<Option<Arc<str>>, Error>| r.map(|n| n.map(|n| n.to_string()));
        let cases = [
            (None, None, c("x"), Ok(None)),
            (Some("pk"), None, c("pk"), Ok(None)),
            (Some("pk"), None, c("k-alice"), Err(Error::Unauthorized)),
            (None, Some(&keys), c("k-alice"), Ok(Some("alice".to_string()))),
            (None, Some(&keys), c("pk"), Err(Error::Unauthorized)),
            (Some("pk"), Some(&keys), c("pk"), Ok(None)),
            (Some("pk"), Some(&keys), c("k-alice"), Ok(Some("alice".to_string()))),
            (Some("pk"), Some(&keys), Credentials::default(), Err(Error::Unauthorized)),
        ];
        for (i, (proxy_key, keys, creds, expected)) in cases.into_iter().enumerate() {
            assert_eq!(name(check(proxy_key, keys, &creds)), expected, "row {i}");
        }
    }

    /// A name's requests past its `max=` are refused; a finished one frees its place.
    #[test]
    fn the_limiter_counts_per_name() {
        let limiter = Limiter::default();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let first = limiter.acquire(&alice, Some(2)).unwrap();
        let _second = limiter.acquire(&alice, Some(2)).unwrap();
        assert_eq!(limiter.acquire(&alice, Some(2)).unwrap_err(), Error::ClientLimit { limit: 2 });
        let _bob = limiter.acquire(&bob, Some(1)).unwrap();
        drop(first);
        let _third = limiter.acquire(&alice, Some(2)).unwrap();
        let mut counts = limiter.in_flight();
        counts.sort();
        assert_eq!(counts, vec![(alice.clone(), 2), (bob.clone(), 1)]);
        let _unlimited: Vec<_> = (0..5).map(|_| limiter.acquire(&bob, None).unwrap()).collect();
    }

    /// A changed file takes effect at the first look once it is `QUIET`; a malformed one keeps
    /// the previous keys and is reported once; a missing one too.
    #[test]
    fn the_store_reloads_and_keeps_the_last_good_keys() {
        let dir = std::env::temp_dir().join(format!("codex-shield-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        let names =
            |s: &Store| s.current().unwrap().entries.iter().map(|e| e.name.to_string()).collect::<Vec<_>>();
        std::fs::write(&path, "alice: k1\n").unwrap();
        let store = Store::open(Some(&path)).unwrap();
        let later = || store.reload(SystemTime::now() + Duration::from_secs(1), QUIET);
        assert_eq!(later(), Reload::Unchanged);
        // (new content, or None to delete the file; what the look finds; the names after it)
        type Step<'a> = (Option<&'a str>, Result<usize, &'a str>, &'a [&'a str]);
        let steps: [Step; 5] = [
            (Some("alice: k1\nbob: k2\n"), Ok(2), &["alice", "bob"]),
            (Some("alice: k1\nbob k2\n"), Err("line 2: expected `name: key`"), &["alice", "bob"]),
            (None, Err("cannot read"), &["alice", "bob"]),
            (Some("bob: k2\n"), Ok(1), &["bob"]),
            (Some("bob: k2 max=1\ncarol: k3\n"), Ok(2), &["bob", "carol"]),
        ];
        for (i, (content, expected, after)) in steps.into_iter().enumerate() {
            match content {
                Some(text) => {
                    std::fs::write(&path, text).unwrap();
                    let at_once = store.reload(SystemTime::now(), QUIET);
                    assert_eq!(at_once, Reload::Unchanged, "step {i}: read only once quiet");
                }
                None => std::fs::remove_file(&path).unwrap(),
            }
            let got = later();
            match (expected, &got) {
                (Ok(n), Reload::Loaded(m)) => assert_eq!(*m, n, "step {i}"),
                (Err(reason), Reload::Kept(why)) => assert!(why.contains(reason), "step {i}: {why}"),
                _ => panic!("step {i}: expected {expected:?}, got {got:?}"),
            }
            assert_eq!(later(), Reload::Unchanged, "step {i}: reported once");
            assert_eq!(names(&store), after, "step {i}");
        }
        std::fs::write(&path, "x y\n").unwrap();
        let refused = Store::open(Some(&path)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("CLIENT_KEYS_FILE") && refused.contains("line 1"), "{refused}");
        assert!(Store::open(None).unwrap().current().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
