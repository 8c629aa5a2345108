//! The rest of an upstream body after its terminal event, and the deadline that bounds
//! reading it.
//!
//! An answer is complete at its terminal event; a chunked body's last chunk (`0\r\n\r\n`)
//! usually arrives in the same read, at worst a moment later. ureq hands a connection back
//! to its pool only once the body was read to its end, so that rest is read — on the
//! request's own thread, after its answer is written — with a short deadline: a well-behaved
//! upstream's connection is reused, one that holds its body open is closed. No thread is
//! started and nothing waits for it before the client has its answer.
//!
//! ureq's timeouts are per read, fixed when the request is sent; the deadline here is a
//! thread-local that one thin transport wrapper applies to every wait for input on this
//! thread while it is set, and only then. The same wrapper probes a connection once between
//! two uses instead of twice: ureq probes it (three system calls: non-blocking on, a read,
//! off) when a body read to its end hands it back to the pool and again when the next request
//! takes it out; only the second probe can see what the idle time did to it (a close, bytes
//! the upstream sent unasked), so the first is answered without one. And it sends a
//! request's small head with its body, in one write (ureq writes them one after the other,
//! each with a system call and a packet of its own). It decides nothing about answers.

use std::cell::Cell;
use std::fmt;
use std::io::Read;
use std::time::{Duration, Instant};

use ureq::unversioned::transport::time::Duration as UreqDuration;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// The longest a body's rest is read after the answer, and how much of it: a well-behaved
/// upstream sends its last chunk with (or right after) the terminal event.
const TAIL_TIME: Duration = Duration::from_millis(500);
const TAIL_BYTES: usize = 64 * 1024;

thread_local! {
    /// While set, no wait for upstream input on this thread goes past it.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The unread rest of an answer's body, holding its upstream connection.
pub struct Tail {
    reader: Box<dyn Read + Send>,
}

impl fmt::Debug for Tail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tail")
    }
}

/// What became of a tail: its connection went back to the pool, or was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Reused { bytes: usize },
    Closed,
}

impl Tail {
    pub fn new(reader: impl Read + Send + 'static) -> Tail {
        Tail { reader: Box::new(reader) }
    }

    /// Read the rest to its end (at most `TAIL_BYTES`, within `TAIL_TIME`), so that the
    /// connection goes back to the pool; past either bound it is closed.
    pub fn finish(self) -> Finished {
        let finished = finish(self.reader, TAIL_BYTES, Instant::now() + TAIL_TIME);
        match finished {
            Finished::Reused { bytes } => {
                crate::debug!("an answer's last {bytes} bytes read: its connection can be reused")
            }
            Finished::Closed => crate::debug!("an upstream held its body open after the answer: closed"),
        }
        finished
    }
}

/// Read `reader` to its end within `limit` bytes and before `deadline`.
fn finish(mut reader: impl Read, limit: usize, deadline: Instant) -> Finished {
    let _deadline = Deadline::set(deadline);
    let (mut buf, mut bytes) = ([0u8; 4096], 0);
    while bytes <= limit {
        match reader.read(&mut buf) {
            Ok(0) => return Finished::Reused { bytes },
            Ok(n) => bytes += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Finished::Closed,
        }
    }
    Finished::Closed
}

/// The thread's deadline while this lives.
struct Deadline;

impl Deadline {
    fn set(at: Instant) -> Deadline {
        DEADLINE.with(|d| d.set(Some(at)));
        Deadline
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(None));
    }
}

/// The last link of the agent's connector chain: wraps every transport so that the
/// thread's deadline, when set, bounds its waits for input.
#[derive(Debug)]
pub struct Bounded;

impl Connector<Box<dyn Transport>> for Bounded {
    type Out = BoundedTransport;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<Box<dyn Transport>>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        Ok(chained.map(BoundedTransport::new))
    }
}

/// A transport whose waits for input end at the thread's deadline, probed once between uses,
/// that sends a request's head with its body.
#[derive(Debug)]
pub struct BoundedTransport {
    inner: Box<dyn Transport>,
    /// Bytes went out or were awaited since the last `is_open`: the next one is ureq handing
    /// the connection back to its pool after a body read to its end.
    used: bool,
    /// Output handed over but not sent yet, and the timeout it was handed over with. ureq
    /// sends a request's head, then its body, each in a write of its own (one system call and
    /// one packet each): a small output is held and sent in front of the next, or before the
    /// first wait for input.
    held: Vec<u8>,
    held_timeout: Option<NextTimeout>,
}

impl BoundedTransport {
    fn new(inner: Box<dyn Transport>) -> BoundedTransport {
        BoundedTransport { inner, used: false, held: Vec::new(), held_timeout: None }
    }

    /// Send what is held, if anything.
    fn release(&mut self) -> Result<(), ureq::Error> {
        let Some(timeout) = self.held_timeout.take() else {
            return Ok(());
        };
        let amount = self.held.len();
        self.inner.buffers().output()[..amount].copy_from_slice(&self.held);
        self.held.clear();
        self.inner.transmit_output(amount, timeout)
    }
}

impl Transport for BoundedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    /// Send the first `amount` bytes of the output buffer: behind what is held, as much as
    /// the buffer has room for (the rest is held in turn); a small output alone is held.
    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.used = true;
        let output = self.inner.buffers().output();
        if self.held_timeout.is_none() {
            if amount > output.len() / 4 {
                return self.inner.transmit_output(amount, timeout);
            }
            self.held.extend_from_slice(&output[..amount]);
            self.held_timeout = Some(timeout);
            return Ok(());
        }
        let held = self.held.len();
        let sent = amount.min(output.len() - held);
        let rest = output[sent..amount].to_vec();
        output.copy_within(..sent, held);
        output[..held].copy_from_slice(&self.held);
        self.held.clear();
        self.held_timeout = None;
        self.inner.transmit_output(held + sent, timeout)?;
        if !rest.is_empty() {
            self.held = rest;
            self.held_timeout = Some(timeout);
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.used = true;
        self.release()?;
        self.inner.await_input(bounded(timeout, DEADLINE.with(Cell::get), Instant::now())?)
    }

    /// After a use, open without a probe: the connection goes to the pool, and taking it out
    /// again probes it (with whatever arrived meanwhile, a reset or stray bytes, to see).
    fn is_open(&mut self) -> bool {
        std::mem::take(&mut self.used) || self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

/// `timeout`, shortened to end at `deadline` if one is set; an error once it has passed.
fn bounded(
    mut timeout: NextTimeout,
    deadline: Option<Instant>,
    now: Instant,
) -> Result<NextTimeout, ureq::Error> {
    let Some(deadline) = deadline else {
        return Ok(timeout);
    };
    let left = deadline.saturating_duration_since(now);
    if left.is_zero() {
        return Err(ureq::Error::Timeout(ureq::Timeout::PerRead));
    }
    if UreqDuration::Exact(left) < timeout.after {
        timeout.after = UreqDuration::Exact(left);
        timeout.reason = ureq::Timeout::PerRead;
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// A reader that gives its pieces, then either ends or fails (as a timed-out read does).
    struct Script(Vec<io::Result<Vec<u8>>>);

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let piece = self.0.remove(0)?;
            buf[..piece.len()].copy_from_slice(&piece);
            Ok(piece.len())
        }
    }

    #[test]
    fn a_tail_is_read_to_its_end_within_its_bounds() {
        let timed_out = || Err(io::Error::new(io::ErrorKind::TimedOut, "deadline"));
        let later = Instant::now() + Duration::from_secs(5);
        type Case = (&'static str, Vec<io::Result<Vec<u8>>>, usize, Finished);
        let cases: Vec<Case> = vec![
            ("already at its end", vec![], 64, Finished::Reused { bytes: 0 }),
            (
                "comments, then the end",
                vec![Ok(b": ka\n\n".to_vec()), Ok(vec![])],
                64,
                Finished::Reused { bytes: 6 },
            ),
            (
                "held open past the deadline",
                vec![Ok(b": ka\n\n".to_vec()), timed_out()],
                64,
                Finished::Closed,
            ),
            ("more than the limit", vec![Ok(vec![b' '; 40]), Ok(vec![b' '; 40])], 64, Finished::Closed),
            ("exactly the limit", vec![Ok(vec![b' '; 64])], 64, Finished::Reused { bytes: 64 }),
        ];
        for (name, pieces, limit, expected) in cases {
            assert_eq!(finish(Script(pieces), limit, later), expected, "{name}");
        }
    }

    #[test]
    fn the_deadline_is_set_only_while_a_tail_is_read() {
        struct Peek(Vec<Option<Instant>>);
        impl Read for Peek {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                self.0.push(DEADLINE.with(Cell::get));
                Ok(0)
            }
        }
        let at = Instant::now() + Duration::from_millis(300);
        let mut peek = Peek(vec![]);
        assert_eq!(finish(&mut peek, 64, at), Finished::Reused { bytes: 0 });
        assert_eq!(peek.0, vec![Some(at)]);
        assert_eq!(DEADLINE.with(Cell::get), None);
    }

    #[test]
    fn waits_for_input_end_at_the_deadline() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let timeout = |after: UreqDuration| NextTimeout {
            after,
            reason: ureq::Timeout::Global,
            per_read: None,
            per_write: None,
        };
        let long = timeout(UreqDuration::Exact(ms(120_000)));
        let after =
            |t: Result<NextTimeout, ureq::Error>| t.map(|t| (t.after, t.reason)).map_err(|e| e.to_string());
        let cases = [
            (
                "no deadline: unchanged",
                long,
                None,
                Ok((UreqDuration::Exact(ms(120_000)), ureq::Timeout::Global)),
            ),
            (
                "shortened to the deadline",
                long,
                Some(now + ms(300)),
                Ok((UreqDuration::Exact(ms(300)), ureq::Timeout::PerRead)),
            ),
            (
                "never-ending waits too",
                timeout(UreqDuration::NotHappening),
                Some(now + ms(300)),
                Ok((UreqDuration::Exact(ms(300)), ureq::Timeout::PerRead)),
            ),
            (
                "a shorter wait stays",
                timeout(UreqDuration::Exact(ms(100))),
                Some(now + ms(300)),
                Ok((UreqDuration::Exact(ms(100)), ureq::Timeout::Global)),
            ),
            (
                "past: no wait at all",
                long,
                Some(now),
                Err(ureq::Error::Timeout(ureq::Timeout::PerRead).to_string()),
            ),
        ];
        for (name, timeout, deadline, expected) in cases {
            assert_eq!(after(bounded(timeout, deadline, now)), expected, "{name}");
        }
    }

    /// A transport that counts its probes and answers them with `open`.
    #[derive(Debug)]
    struct Probed {
        buffers: ureq::unversioned::transport::LazyBuffers,
        probes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        open: bool,
    }

    impl Transport for Probed {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }

        fn transmit_output(&mut self, _: usize, _: NextTimeout) -> Result<(), ureq::Error> {
            Ok(())
        }

        fn await_input(&mut self, _: NextTimeout) -> Result<bool, ureq::Error> {
            Ok(true)
        }

        fn is_open(&mut self) -> bool {
            self.probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.open
        }
    }

    /// ureq asks `is_open` when a used connection goes back to its pool and when a request
    /// takes it out: only the second one probes the socket.
    #[test]
    fn a_connection_is_probed_once_between_uses() {
        let timeout = NextTimeout {
            after: UreqDuration::Exact(Duration::from_secs(1)),
            reason: ureq::Timeout::Global,
            per_read: None,
            per_write: None,
        };
        // s: sent, r: awaited input, o: is_open
        let cases: &[(&str, bool, &str, usize)] = &[
            ("sor", true, "T", 0),
            ("sro", true, "T", 0),
            ("sroo", true, "TT", 1),
            ("srooo", true, "TTT", 2),
            ("sroosroo", true, "TTTT", 2),
            ("sroo", false, "TF", 1),
            ("o", false, "F", 1),
            ("oo", true, "TT", 2),
        ];
        for (ops, open, answers, probes) in cases {
            let counted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let buffers = ureq::unversioned::transport::LazyBuffers::new(64, 64);
            let inner = Probed { buffers, probes: counted.clone(), open: *open };
            let mut t = BoundedTransport::new(Box::new(inner));
            let mut got = String::new();
            for op in ops.chars() {
                match op {
                    's' => t.transmit_output(0, timeout).unwrap(),
                    'r' => drop(t.await_input(timeout).unwrap()),
                    _ => got.push(if t.is_open() { 'T' } else { 'F' }),
                }
            }
            let counted = counted.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!((got.as_str(), counted), (*answers, *probes), "{ops} open={open}");
        }
    }

    /// A transport that records what it sends.
    #[derive(Debug)]
    struct Recorded {
        buffers: ureq::unversioned::transport::LazyBuffers,
        sent: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Transport for Recorded {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }

        fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), ureq::Error> {
            let bytes = String::from_utf8_lossy(&self.buffers.output()[..amount]).into_owned();
            self.sent.lock().unwrap().push(bytes);
            Ok(())
        }

        fn await_input(&mut self, _: NextTimeout) -> Result<bool, ureq::Error> {
            Ok(true)
        }

        fn is_open(&mut self) -> bool {
            true
        }
    }

    /// ureq writes a request's head, then its body (through an output buffer of 64 bytes
    /// here): a small head goes out in front of the body, in one write, and whatever is
    /// held goes out before the answer is awaited; the bytes sent are those written, in order.
    #[test]
    fn a_small_head_goes_out_with_the_body() {
        let timeout = NextTimeout {
            after: UreqDuration::Exact(Duration::from_secs(1)),
            reason: ureq::Timeout::Global,
            per_read: None,
            per_write: None,
        };
        // each write: a letter repeated; "." awaits input
        type Case = (&'static [(char, usize)], &'static [&'static str]);
        let cases: &[Case] = &[
            (&[('h', 10), ('b', 20), ('.', 0)], &["h10b20"]),
            (&[('h', 10), ('.', 0)], &["h10"]),
            (&[('h', 10), ('b', 60), ('.', 0)], &["h10b54", "b6"]),
            (&[('h', 10), ('b', 64), ('c', 64), ('.', 0)], &["h10b54", "b10c54", "c10"]),
            (&[('h', 20), ('b', 20), ('.', 0)], &["h20", "b20"]),
            (&[('h', 10), ('b', 20), ('.', 0), ('i', 5), ('.', 0)], &["h10b20", "i5"]),
        ];
        let short = |s: &str| {
            let mut out = String::new();
            let mut chars = s.chars().peekable();
            while let Some(c) = chars.next() {
                let mut n = 1;
                while chars.next_if_eq(&c).is_some() {
                    n += 1;
                }
                out.push_str(&format!("{c}{n}"));
            }
            out
        };
        for (writes, expected) in cases {
            let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let buffers = ureq::unversioned::transport::LazyBuffers::new(64, 64);
            let mut t = BoundedTransport::new(Box::new(Recorded { buffers, sent: sent.clone() }));
            for &(letter, n) in *writes {
                if letter == '.' {
                    t.await_input(timeout).unwrap();
                    continue;
                }
                t.buffers().output()[..n].fill(letter as u8);
                t.transmit_output(n, timeout).unwrap();
            }
            let got: Vec<String> = sent.lock().unwrap().iter().map(|s| short(s)).collect();
            assert_eq!(got, *expected, "{writes:?}");
        }
    }
}
