//! The requests the benchmarks and the throughput probe both ask of their
//! workers (each binary has a worker of its own, which answers them).

use actix::Message;
use actix_webworker::Streamed;
use serde::{Deserialize, Serialize};

/// How many messages the worker has received since the last `Count`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
pub struct Count;

/// Answered with its number.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
pub struct Ping(pub u64);

/// `n` items of 64 B, streamed in answer.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Streamed<Item>")]
pub struct Items(pub u64);

impl Items {
    /// The answer: its items.
    pub fn stream(&self) -> Streamed<Item> {
        Streamed::iter((0..self.0).map(|_| Item(vec![7; 64])))
    }
}

/// One streamed item.
#[derive(Serialize, Deserialize)]
pub struct Item(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// How many primes are below `n` (trial division): a CPU-bound job, about
/// 5 ms for 120,000 on this project's machine.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
pub struct Primes(pub u64);

impl Primes {
    /// The answer.
    pub fn count(&self) -> u64 {
        let n = self.0;
        (2..n).filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0)).count() as u64
    }
}
