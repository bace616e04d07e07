//! What a user of actix-webworker does not build: its performance lab and
//! its actix-web example, a workspace member of their own (never
//! published) so that `cargo run --example echo` and `cargo test` in the
//! crate's directory compile none of their dependencies (criterion,
//! actix-web, awc and theirs).
//!
//! - `benches/throughput.rs`: the criterion groups, each beside a raw
//!   socketpair baseline (`cargo bench -p actix-webworker-lab`).
//! - `examples/throughput.rs`: one line per scenario, remote workers over
//!   TCP and TLS included (`cargo run --release -p actix-webworker-lab
//!   --example throughput`); `docs/performance.md` has its figures.
//! - `examples/web_pool/`: an actix-web server that hands its requests to
//!   a pool of workers, and `tests/web_pool.rs`, the same under real HTTP
//!   with a member killed mid-way.
//!
//! This library holds only what those share: `floor.rs`, an actor that
//! takes posts and asks and does nothing (actix's own share of the
//! address path, for the `*_actix_floor` rows); `spans.rs`, a `tracing`
//! subscriber that records every span, for the `tracing_overhead` rows;
//! `messages.rs`, the requests both ask of their workers.

pub mod floor;
pub mod messages;
pub mod spans;
