//! A stranger's first bytes to a remote worker's port: the token frame,
//! in the clear and as a TLS client's first flight; and a worker's secrets
//! block.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| actix_webworker::fuzzing::auth(data));
