//! A worker's bytes, with descriptors sent along, through the parent's
//! whole side of a connection: reader, dispatch, answers, events to a
//! recipient; no descriptor may be left open at the end.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| actix_webworker::fuzzing::link(data));
