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
/// At start-up both sides exchange a fingerprint of the protocol (the names
/// of the message types and [`VERSION`](Protocol::VERSION)); a worker built
/// with other message types is refused with
/// [`WireError::FingerprintMismatch`](crate::WireError::FingerprintMismatch)
/// instead of decoding garbage. Bump `VERSION` when you change the shape of a
/// type but keep its name.
pub trait Protocol: 'static {
    /// What the parent posts to the worker.
    type ToWorker: Serialize + DeserializeOwned + Send + 'static;
    /// What the worker posts to the parent.
    type FromWorker: Serialize + DeserializeOwned + Send + 'static;
    /// A version of your own, part of the fingerprint.
    const VERSION: u32 = 0;
}

/// The fingerprint both sides compare during the handshake.
pub(crate) fn fingerprint<P: Protocol>() -> u64 {
    let mut h = Fnv::new();
    h.write(std::any::type_name::<P::ToWorker>().as_bytes());
    h.write(&[0]);
    h.write(std::any::type_name::<P::FromWorker>().as_bytes());
    h.write(&[0]);
    h.write(&P::VERSION.to_le_bytes());
    h.finish()
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

#[cfg(test)]
mod tests {
    use super::*;

    struct A;
    impl Protocol for A {
        type ToWorker = String;
        type FromWorker = u32;
    }
    struct B;
    impl Protocol for B {
        type ToWorker = String;
        type FromWorker = u64;
    }
    struct C;
    impl Protocol for C {
        type ToWorker = String;
        type FromWorker = u32;
        const VERSION: u32 = 2;
    }

    #[test]
    fn fingerprints_tell_protocols_apart() {
        assert_eq!(fingerprint::<A>(), fingerprint::<A>());
        assert_ne!(fingerprint::<A>(), fingerprint::<B>());
        assert_ne!(fingerprint::<A>(), fingerprint::<C>());
    }
}
