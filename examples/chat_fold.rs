//! The CPU cost of a chat answer's checks and folds, per answer (`cargo run --release
//! --example chat_fold [file.sse]`, default bench/fixtures/chat.sse): the read-time check of
//! every event (`check::Progress`), the translation to a Responses stream
//! (`translate::events::to_responses`) and the `chat.completion` of a non-streaming client
//! (`assemble::chat`). Prints microseconds per answer, the best of five rounds.

use std::time::Instant;

use codex_shield::body::Body;
use codex_shield::check::{Api, Progress};
use codex_shield::sse::Parser;
use codex_shield::translate::events::{to_responses, Ids};
use codex_shield::translate::ToolMap;
use codex_shield::{assemble, check};

const ROUNDS: usize = 5;
const ANSWERS: usize = 2000;

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "bench/fixtures/chat.sse".into());
    let stream = std::fs::read(&path).expect("read the stream");
    let body = Body::from(stream.clone());
    let request = serde_json::json!({"model": "m"});
    let map = ToolMap::default();
    let check_us = best(|| {
        let (mut parser, mut progress) = (Parser::new(), Progress::default());
        parser.feed(&stream, |event| progress.observe(Api::Chat, &event) != check::Verdict::Complete);
    });
    let translate_us = best(|| {
        let pieces: Vec<&[u8]> = body.chunks().collect();
        std::hint::black_box(to_responses(&pieces, &map, &request, &mut Ids::new(1)));
    });
    let assemble_us = best(|| {
        std::hint::black_box(assemble::chat(&body).expect("a whole chat answer"));
    });
    println!(
        "chat_fold file={path} bytes={} check_us={check_us:.1} translate_us={translate_us:.1} assemble_us={assemble_us:.1}",
        stream.len()
    );
}

/// Microseconds per call of `f`, the best of `ROUNDS` rounds of `ANSWERS` calls.
fn best(mut f: impl FnMut()) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ANSWERS {
                f();
            }
            start.elapsed().as_secs_f64() * 1e6 / ANSWERS as f64
        })
        .fold(f64::INFINITY, f64::min)
}
