//! Fuzzes the chat/1 frame decoder: arbitrary bytes, delivered in arbitrary
//! pieces, must never panic, never buffer more than one maximal frame, and
//! every frame decoded must re-encode to bytes that decode to the same frame.
#![no_main]

use bytes::BytesMut;
use chat::protocol::codec::{Frame, FrameDecoder, MAX_FRAME_LEN, MAX_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).max(1);
    let mut buf = BytesMut::new();
    for piece in input.chunks(cut) {
        buf.extend_from_slice(piece);
        loop {
            match FrameDecoder.decode(&mut buf) {
                Ok(Some(frame)) => round_trip(&frame),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.capacity() <= MAX_HEADER_LEN + MAX_FRAME_LEN as usize + input.len());
    }
});

fn round_trip(frame: &Frame) {
    if let Frame::Unknown { .. } = frame {
        return; // its payload is not kept, so it cannot be re-encoded as is
    }
    let mut wire = BytesMut::new();
    frame.encode(&mut wire);
    let again = FrameDecoder.decode(&mut wire).expect("re-encoded frame decodes");
    assert_eq!(again.as_ref(), Some(frame));
}
