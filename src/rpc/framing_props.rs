//! Property tests of the socket's framing and request parsing: any byte stream, read in any
//! chunking, yields exactly the frames a line splitter would (oversized ones as `TooLarge`,
//! with memory held to the cap), and any line gets a well-formed answer or none (a
//! notification). `PROPTEST_CASES` sets how many cases run (`cargo test` keeps a small default).

use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::io::BufReader;

use super::{Frame, read_frame};
use crate::rpc::protocol;

/// What a plain line splitter says the frames of `input` are, with frames over `max` bytes
/// reported as too large.
fn model(input: &[u8], max: usize) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    // The part after the last newline is a frame only when it holds bytes.
    if parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    for p in parts {
        out.push((p.len() <= max).then(|| p.to_vec()));
    }
    out
}

fn frames(input: &[u8], max: usize, chunk: usize) -> (Vec<Option<Vec<u8>>>, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime needs no resources that can be missing");
    rt.block_on(async {
        let mut r = BufReader::with_capacity(chunk, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut largest = 0;
        loop {
            let f = read_frame(&mut r, &mut buf, max)
                .await
                .expect("reading a slice cannot fail");
            largest = largest.max(buf.len());
            match f {
                Frame::Eof => break,
                Frame::Line => out.push(Some(buf.clone())),
                Frame::TooLarge => out.push(None),
            }
        }
        (out, largest)
    })
}

/// Bytes biased towards newlines and JSON punctuation, so frames are short and varied.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(b'\n'),
            2 => prop::sample::select(b"{}[]\":,0a ".to_vec()),
            5 => any::<u8>(),
        ],
        0..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn frames_are_the_lines_in_order_and_never_hold_more_than_the_cap(
        input in stream(),
        max in 1usize..64,
        chunk in 1usize..32,
    ) {
        let (got, largest) = frames(&input, max, chunk);
        prop_assert_eq!(got, model(&input, max));
        // Past the cap, the frame's bytes are dropped, not kept: at most one chunk over it.
        prop_assert!(largest <= max + chunk);
    }

    #[test]
    fn every_line_gets_one_well_formed_answer_or_is_a_notification(input in stream()) {
        for line in input.split(|&b| b == b'\n') {
            match protocol::parse_request(line) {
                Ok(req) => {
                    prop_assert!(!req.method.is_empty());
                    if let Some(id) = &req.id {
                        prop_assert!(id.is_string() || id.is_number() || id.is_null());
                    }
                }
                Err((id, e)) => {
                    let answer = protocol::error_response(id.clone(), &e);
                    prop_assert_eq!(&answer["jsonrpc"], "2.0");
                    prop_assert_eq!(&answer["id"], &id);
                    prop_assert!(answer["error"]["code"].is_i64());
                    prop_assert!(answer["error"]["data"]["kind"].is_string());
                    // The answer is one line: it can be framed back to the client.
                    prop_assert!(!answer.to_string().contains('\n'));
                }
            }
        }
    }

    #[test]
    fn a_request_with_an_id_is_answered_with_that_id(
        id in prop_oneof![
            any::<i64>().prop_map(Value::from),
            "[a-z0-9]{0,12}".prop_map(Value::from),
        ],
        method in "[a-z.]{0,12}",
        params in prop_oneof![Just(json!({})), Just(json!([])), Just(json!(3)), Just(Value::Null)],
        jsonrpc in prop_oneof![Just(json!("2.0")), Just(json!("1.0")), Just(Value::Null)],
    ) {
        let line = json!({ "jsonrpc": jsonrpc, "id": id, "method": method, "params": params });
        match protocol::parse_request(line.to_string().as_bytes()) {
            Ok(req) => prop_assert_eq!(req.id, Some(id)),
            Err((answer_id, _)) => prop_assert_eq!(answer_id, id),
        }
    }
}
