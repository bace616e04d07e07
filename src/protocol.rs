//! The protocol: the message types a worker and its parent exchange, named
//! once and shared by both sides.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Names the typed messages of one kind of worker. Implement it on a unit
/// struct that both the parent and the worker code can see:
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug)]
/// enum ToWorker { Hello { foo: String } }
///
/// #[derive(Serialize, Deserialize, Debug)]
/// enum FromWorker { Test { test: String } }
///
/// struct Echo;
///
/// impl actix_webworker::Protocol for Echo {
///     type ToWorker = ToWorker;
///     type FromWorker = FromWorker;
/// }
/// ```
///
/// At start-up both sides exchange a fingerprint of the protocol: the serde
/// shape of both message types (every struct, enum, variant and field, by
/// name and format, as their `Deserialize` reads them) and
/// [`VERSION`](Protocol::VERSION). A worker built separately, by another
/// compiler even, is accepted when its types have the same shape; one whose
/// types changed (a field's type, a variant) is refused with
/// [`WireError::FingerprintMismatch`](crate::WireError::FingerprintMismatch)
/// instead of decoding garbage. Bump `VERSION` for a change the shape does
/// not show (what a field means).
///
/// The types must be ones bincode can carry: `WorkerBuilder::start` refuses
/// with [`SpawnError::Protocol`](crate::SpawnError::Protocol), naming the
/// type, those read with `deserialize_any` (`#[serde(untagged)]`, internally
/// or adjacently tagged enums), `#[serde(flatten)]`, and fields skipped when
/// written (`#[serde(skip_serializing_if)]`, as far as its common predicates
/// go: write an `Option` instead).
pub trait Protocol: 'static {
    /// What the parent posts to the worker.
    type ToWorker: Serialize + DeserializeOwned + Send + 'static;
    /// What the worker posts to the parent.
    type FromWorker: Serialize + DeserializeOwned + Send + 'static;
    /// A version of your own, part of the fingerprint.
    const VERSION: u32 = 0;
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}
