//! Raw bytes from a peer through the whole reading path: WebSocket framing
//! under the size limit, then every message's envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| actix_webworker::fuzzing::stream(data));
