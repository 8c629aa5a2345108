//! An answer's bytes, kept as a list of fixed-size chunks.
//!
//! A buffered answer grows as it arrives. Growing one vector means reallocating and copying
//! it, and leaves freed blocks of every size behind: with 256 answers of 1 MiB in flight that
//! cost 1.7 MB (glibc) to 4.3 MB (mimalloc) of memory per answer. Equal chunks are never
//! copied and are reused whole by the allocator, so an answer costs about its own size. Only
//! the first chunk grows, by powers of two from `FIRST` to `CHUNK`, so that the thousands of
//! small answers a busy proxy holds at once do not each reserve 64 KiB; every later chunk is
//! allocated at `CHUNK` and never reallocated. This module only stores bytes; it does not
//! parse or send them. What its chunks reserve is counted as held against the memory budget
//! (`memory.rs`) while the body lives; `try_push` refuses to take the total over the limit.

/// Size of one chunk: large enough that a typical answer is one chunk and one write.
pub const CHUNK: usize = 64 * 1024;

/// The first chunk's starting capacity; it doubles (copying at most 48 KiB in all) up to
/// `CHUNK` before a second chunk starts. 16 KiB: a small answer is never copied, and leaves
/// no freed 4 and 8 KiB blocks behind (12 KB per answer in flight, measured; pages of the
/// chunk it does not fill are never touched, so not resident).
pub const FIRST: usize = 16 * 1024;

use crate::memory::{self, Overdrawn};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    chunks: Vec<Vec<u8>>,
    len: usize,
    counted: Counted,
}

/// The bytes of a body counted as held (its chunks' capacity), given back when it drops.
#[derive(Debug, Default)]
struct Counted(usize);

impl Clone for Counted {
    fn clone(&self) -> Counted {
        memory::add(self.0);
        Counted(self.0)
    }
}

/// Accounting, not content: two bodies with the same bytes are equal.
impl PartialEq for Counted {
    fn eq(&self, _: &Counted) -> bool {
        true
    }
}

impl Eq for Counted {}

impl Drop for Counted {
    fn drop(&mut self) {
        memory::sub(self.0);
    }
}

impl Body {
    pub fn new() -> Body {
        Body::default()
    }

    /// Append bytes, filling the last chunk before starting a new one (the first chunk grows
    /// to `CHUNK` first).
    pub fn push(&mut self, bytes: &[u8]) {
        let always = |n| {
            memory::add(n);
            Ok(())
        };
        let _ = self.append(bytes, always);
    }

    /// `push`, unless the chunks it needs would take the bytes held over the memory budget's
    /// hard limit: then the body keeps what it had room for and says so.
    pub fn try_push(&mut self, bytes: &[u8]) -> Result<(), Overdrawn> {
        self.append(bytes, memory::try_add)
    }

    /// Append, counting each new reservation through `count` first.
    fn append(
        &mut self,
        mut bytes: &[u8],
        mut count: impl FnMut(usize) -> Result<(), Overdrawn>,
    ) -> Result<(), Overdrawn> {
        while !bytes.is_empty() {
            let room = self.chunks.last().map_or(0, |c| c.capacity() - c.len());
            if room == 0 {
                match self.chunks.last_mut() {
                    Some(first) if first.capacity() < CHUNK => {
                        let capacity = grown(first.len() + bytes.len());
                        count(capacity - first.capacity())?;
                        self.counted.0 += capacity - first.capacity();
                        first.reserve_exact(capacity - first.len());
                    }
                    Some(_) => {
                        count(CHUNK)?;
                        self.counted.0 += CHUNK;
                        self.chunks.push(Vec::with_capacity(CHUNK));
                    }
                    None => {
                        let capacity = grown(bytes.len());
                        count(capacity)?;
                        self.counted.0 += capacity;
                        self.chunks.push(Vec::with_capacity(capacity));
                    }
                }
                continue;
            }
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.chunks.last_mut().expect("a chunk with room").extend_from_slice(now);
            self.len += now.len();
            bytes = later;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, in order, one chunk at a time.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().map(Vec::as_slice)
    }

    /// The chunks themselves, for writing.
    pub fn into_chunks(self) -> Vec<Vec<u8>> {
        self.chunks
    }

    /// Keep the first `len` bytes; the chunks left empty are freed and no longer counted.
    pub fn truncate(&mut self, len: usize) {
        while self.len > len {
            let last = self.chunks.last_mut().expect("the bytes are in chunks");
            let gone = (self.len - len).min(last.len());
            last.truncate(last.len() - gone);
            self.len -= gone;
            if last.is_empty() {
                let freed = last.capacity();
                self.chunks.pop();
                self.counted.0 -= freed;
                memory::sub(freed);
            }
        }
    }

    /// All the bytes in one vector (tests and small bodies).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

/// The first chunk's capacity for `needed` bytes: a power of two from `FIRST` to `CHUNK`.
fn grown(needed: usize) -> usize {
    needed.next_power_of_two().clamp(FIRST, CHUNK)
}

impl From<Vec<u8>> for Body {
    /// A body that is already whole stays one chunk, whatever its size; no copy.
    fn from(bytes: Vec<u8>) -> Body {
        let (len, capacity) = (bytes.len(), bytes.capacity());
        memory::add(capacity);
        let chunks = if bytes.is_empty() { Vec::new() } else { vec![bytes] };
        Body { chunks, len, counted: Counted(capacity) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_fill_equal_chunks() {
        let mut body = Body::new();
        let piece: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut expected = Vec::new();
        for _ in 0..30 {
            body.push(&piece);
            expected.extend_from_slice(&piece);
        }
        assert_eq!(body.len(), expected.len());
        assert_eq!(body.to_vec(), expected);
        let sizes: Vec<usize> = body.chunks().map(<[u8]>::len).collect();
        assert_eq!(sizes.len(), expected.len().div_ceil(CHUNK));
        assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == CHUNK));
        assert!(body.chunks.iter().all(|c| c.capacity() == CHUNK), "no chunk was reallocated");
        assert_eq!(Body::from(b"abc".to_vec()).to_vec(), b"abc");
        assert!(Body::from(Vec::new()).is_empty());
    }

    /// A small answer holds at most `FIRST` or twice its size, not a whole chunk; the first chunk reaches
    /// exactly `CHUNK` before a second one starts.
    #[test]
    fn the_first_chunk_grows_with_the_answer() {
        let capacities = |pieces: &[usize]| {
            let mut body = Body::new();
            for &n in pieces {
                body.push(&vec![7; n]);
            }
            assert_eq!(body.to_vec(), vec![7; pieces.iter().sum()]);
            body.chunks.iter().map(Vec::capacity).collect::<Vec<_>>()
        };
        let cases: &[(&[usize], &[usize])] = &[
            (&[10], &[FIRST]),
            (&[FIRST], &[FIRST]),
            (&[FIRST + 1], &[2 * FIRST]),
            (&[3000, 3000, 3000], &[16 * 1024]),
            (&[10_000, 8_000], &[32 * 1024]),
            (&[40_000, 40_000], &[CHUNK, CHUNK]),
            (&[CHUNK + 1], &[CHUNK, CHUNK]),
            (&[200_000], &[CHUNK; 4]),
            (&[1; 5000], &[FIRST]),
            (&[1; 20_000], &[32 * 1024]),
        ];
        for (pieces, expected) in cases {
            let got = capacities(pieces);
            assert_eq!(got, *expected, "pieces {:?}", &pieces[..pieces.len().min(3)]);
        }
    }

    /// What the chunks reserve is what is counted as held, copies included; a growth the
    /// budget refuses leaves the body with what fit.
    #[test]
    fn reservations_are_counted() {
        let mut body = Body::new();
        body.push(&[1; 100_000]);
        let reserved = |b: &Body| b.chunks.iter().map(Vec::capacity).sum::<usize>();
        assert_eq!((body.counted.0, reserved(&body)), (2 * CHUNK, 2 * CHUNK));
        assert_eq!(body.clone().counted.0, 2 * CHUNK);
        assert_eq!(Body::from(Vec::with_capacity(10)).counted.0, 10);
        let mut left = CHUNK + 100;
        let mut limited = Body::new();
        let refused = limited.append(&[2; 200_000], |n| match n <= left {
            true => {
                left -= n;
                Ok(())
            }
            false => Err(Overdrawn { held: 1, budget: 2 }),
        });
        assert_eq!(refused, Err(Overdrawn { held: 1, budget: 2 }));
        assert_eq!((limited.len(), limited.counted.0, reserved(&limited)), (CHUNK, CHUNK, CHUNK));
        assert_eq!(limited.to_vec(), vec![2; CHUNK]);
    }
}
