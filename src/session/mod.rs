//! One connected endpoint, the same on both sides: the hello that checks
//! the peer ([`shape`] gives what both compare), the requests each side
//! asks and answers ([`requests`]), and the dispatch of what arrives.

pub(crate) mod requests;
pub(crate) mod shape;
