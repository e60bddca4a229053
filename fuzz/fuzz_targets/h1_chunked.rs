//! `Chunked::walk` fed the same bytes in arbitrary pieces (as they arrive from a socket, the
//! unwalked rest offered again with the next piece) must decide exactly as when fed whole: the
//! same bytes consumed, the same data bytes, the same end (done, waiting for more, or refused).
//!
//! Input: one byte `n` (n % 8 pieces are cut), then `n % 8` bytes with the length of each cut
//! piece, then the body; what the pieces leave over is the last piece.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stellar_proto::h1::Chunked;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    consumed: usize,
    data: Vec<u8>,
    done: bool,
    refused: bool,
    counted: u64,
}

fuzz_target!(|input: &[u8]| {
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let cuts = usize::from(n % 8).min(rest.len());
    let (lens, body) = rest.split_at(cuts);

    let whole = {
        let mut w = Chunked::default();
        let mut data = Vec::new();
        let r = w.walk(body, |r| data.extend_from_slice(&body[r]));
        if let Ok(n) = r {
            assert!(n <= body.len());
        }
        Outcome {
            consumed: r.as_ref().copied().unwrap_or(0),
            data,
            done: w.done(),
            refused: r.is_err(),
            counted: w.data,
        }
    };

    let mut pieces = Vec::new();
    let mut at = 0;
    for &l in lens {
        let end = (at + usize::from(l)).min(body.len());
        pieces.push(&body[at..end]);
        at = end;
    }
    pieces.push(&body[at..]);

    let split = {
        let mut w = Chunked::default();
        let mut data = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut consumed = 0;
        let mut refused = false;
        for piece in pieces {
            if w.done() {
                break;
            }
            pending.extend_from_slice(piece);
            match w.walk(&pending, |r| data.extend_from_slice(&pending[r])) {
                Ok(n) => {
                    assert!(n <= pending.len());
                    consumed += n;
                    pending.drain(..n);
                }
                Err(_) => {
                    refused = true;
                    break;
                }
            }
        }
        Outcome {
            consumed,
            data,
            done: w.done(),
            refused,
            counted: w.data,
        }
    };
    if whole.refused {
        // What was walked before the refusal may differ with the split; the refusal may not.
        assert!(
            split.refused,
            "refused whole, accepted in pieces: {split:?}"
        );
        return;
    }
    assert_eq!(whole, split);
    assert_eq!(whole.counted, whole.data.len() as u64);
});
