//! One message as it leaves the WebSocket layer: the envelope header
//! (kind, descriptor count, id, tag), the hello, and the payload codec.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| actix_webworker::fuzzing::envelope(data));
