//! Remote workers (`Transport::PlainTcp`, and `Transport::Tls`; the `tcp`
//! and `tls` features): the port a worker connects back to, and the
//! one-time token it must present there before anything is served.
//!
//! Each launch gets a port of its own and a fresh token of 256 random bits
//! (`getrandom`). Connections are checked side by side, each within its own
//! limit, so that a stranger who connects and says nothing holds up no one.
//! A connection that presents another token, or none in time, is refused
//! and reported; the first that presents this launch's token is the
//! worker's. The port stays open while the worker is connected, and every
//! later connection is refused and reported, this launch's token included:
//! it is good for one connection.
//!
//! What strangers can make the port hold is bounded: at most
//! [`MAX_CHECKING`] connections are checked at once, the oldest closed to
//! make room for a new one (the worker presents its token as soon as it
//! connects, so a crowd of silent connections cannot keep it out), and
//! all ports of the process together at most a share of its descriptors
//! ([`crowd`]); and
//! when `accept` fails for want of a resource (descriptors, memory), the
//! port rests [`ACCEPT_BACKOFF`] and tries again, neither failing the
//! launch nor spinning on a connection it cannot take. Refusals are told
//! at a bounded rate: the first at once, then at most one event every
//! [`TELL_EVERY`] with how many more there were
//! ([`WireError::AuthRefusedMore`]).

mod crowd;
pub(crate) mod token;

use token::{answer_token, fresh_token};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::{AbortHandle, Aborted};
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::error::WireError;
#[cfg(feature = "tls")]
use crate::wire::tls::TlsServer;
use crate::wire::ws::Socket;

/// The TLS a port speaks first, when the transport says: the parent's
/// acceptor. Built without the `tls` feature, a type with no value, so
/// that a port is always in the clear and its TLS branches drop out.
#[cfg(feature = "tls")]
pub(crate) type Secure = Option<std::sync::Arc<TlsServer>>;
#[cfg(not(feature = "tls"))]
pub(crate) type Secure = Option<std::convert::Infallible>;

/// A worker's port, listening, and the token made for its launch.
pub(crate) struct Listening {
    listener: std::net::TcpListener,
    token: String,
    /// What the parent sends back to a worker that asks it to prove
    /// itself (in the clear: over TLS the certificate proves it).
    proof: String,
    /// TLS first, when the transport says.
    tls: Secure,
    /// `host:port`, as the worker is told to connect.
    pub address: String,
    /// The worker is started through a launcher, whose exit status is
    /// what the parent sees.
    pub launched: bool,
}

impl Listening {
    /// Listens on `listen`; the worker is told to connect to `connect_to`
    /// (default: the address listened on) at the port the kernel gave.
    pub(crate) fn bind(
        listen: SocketAddr,
        connect_to: Option<&str>,
        tls: Secure,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)?;
        let local = listener.local_addr()?;
        let host = match (connect_to, local) {
            (Some(host), _) => host.to_owned(),
            (None, SocketAddr::V4(v4)) => v4.ip().to_string(),
            (None, SocketAddr::V6(v6)) => format!("[{}]", v6.ip()),
        };
        let address = format!("{host}:{}", local.port());
        let (token, proof) = (fresh_token()?, fresh_token()?);
        Ok(Listening { listener, token, proof, tls, address, launched: false })
    }

    /// The token the worker must present.
    pub(crate) fn token(&self) -> String {
        self.token.clone()
    }

    /// The secret the parent proves itself with.
    pub(crate) fn proof(&self) -> String {
        self.proof.clone()
    }

    /// Accepts connections until one presents the token, and returns it,
    /// with the [`Listener`], still open: [`refuse_all`] keeps it, so that whoever
    /// comes later (with the token again, or another) is refused and told
    /// of. Each that presents another token, or none within `per_peer`, is
    /// closed, and `refused` is told.
    pub(crate) async fn accept(
        self,
        per_peer: Duration,
        mut refused: impl FnMut(WireError),
    ) -> std::io::Result<(Accepted, Listener)> {
        self.listener.set_nonblocking(true)?;
        let mut listener = Listener {
            tcp: tokio::net::TcpListener::from_std(self.listener)?,
            secrets: std::sync::Arc::new((self.token, self.proof)),
            tls: self.tls,
            per_peer,
            checking: FuturesUnordered::new(),
            oldest_first: VecDeque::new(),
            port: crowd::port(),
            untold: Untold { count: 0, last: None, next: tokio::time::Instant::now() },
        };
        let (_, accepted) = listener.next_with_token(&mut refused).await?;
        Ok((accepted, listener))
    }
}

/// How many connections a port checks at once. Each holds a descriptor
/// for up to a quarter of the handshake timeout; beyond this many, the
/// oldest is closed to make room.
pub(crate) const MAX_CHECKING: usize = 64;

/// How long a port rests after `accept` failed for want of a resource.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one refusal event per this long, after the first.
pub(crate) const TELL_EVERY: Duration = Duration::from_secs(1);

/// Refusals not told yet, and when the next may be.
struct Untold {
    count: u64,
    /// The last of them: where it came from, and why it was refused.
    last: Option<(String, String)>,
    /// No refusal is told before this.
    next: tokio::time::Instant,
}

impl Untold {
    /// Tells `e` now if a refusal may be told, else counts it.
    fn refused(&mut self, e: WireError, tell: &mut impl FnMut(WireError)) {
        let now = tokio::time::Instant::now();
        if self.count == 0 && now >= self.next {
            self.next = now + TELL_EVERY;
            return tell(e);
        }
        self.count += 1;
        self.last = match e {
            WireError::AuthRefused { peer, why } => Some((peer, why)),
            other => Some((String::new(), other.to_string())),
        };
    }

    /// Tells those counted, in one event.
    fn tell(&mut self, tell: &mut impl FnMut(WireError)) {
        let (peer, why) = self.last.take().unwrap_or_default();
        let count = std::mem::take(&mut self.count);
        self.next = tokio::time::Instant::now() + TELL_EVERY;
        tell(WireError::AuthRefusedMore { count, peer, why });
    }
}

/// A launch's port, once it accepts: connections accepted and checked
/// side by side.
pub(crate) struct Listener {
    tcp: tokio::net::TcpListener,
    /// The token, and the proof sent back to a worker that asks for it.
    secrets: std::sync::Arc<(String, String)>,
    tls: Secure,
    per_peer: Duration,
    /// Connections whose token is being read, with where they come from.
    checking: FuturesUnordered<Checking>,
    /// The same, oldest first: each one's id ([`crowd::admit`]), and how
    /// to close it.
    oldest_first: VecDeque<(u64, AbortHandle)>,
    /// This port's id among all ([`crowd::port`]).
    port: u64,
    untold: Untold,
}

type Checking = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (u64, SocketAddr, Result<Result<Accepted, WireError>, Aborted>),
            > + Send,
    >,
>;

impl Listener {
    /// The next connection that presents the token; those refused on the
    /// way (another token, none in time, closed to make room) are closed
    /// and told to `refused`, at the rate [`Untold`] allows. Fails only
    /// when the port itself is broken.
    async fn next_with_token(
        &mut self,
        refused: &mut impl FnMut(WireError),
    ) -> std::io::Result<(SocketAddr, Accepted)> {
        let mut resting: Option<tokio::time::Instant> = None;
        loop {
            let until = resting.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                accepted = self.tcp.accept(), if resting.is_none() => match accepted {
                    Ok((stream, peer)) => self.check(stream, peer),
                    // The connection stays in the kernel's queue: taken
                    // again at once, it would fail again at once.
                    Err(e) if transient(&e) => {
                        tracing::debug!(error = %e, "accept failed; the port rests");
                        resting = Some(tokio::time::Instant::now() + ACCEPT_BACKOFF);
                    }
                    Err(e) => return Err(e),
                },
                () = tokio::time::sleep_until(until), if resting.is_some() => resting = None,
                () = tokio::time::sleep_until(self.untold.next), if self.untold.count > 0 => {
                    self.untold.tell(refused);
                }
                Some((id, peer, checked)) = self.checking.next(), if !self.checking.is_empty() => {
                    self.oldest_first.retain(|(each, _)| *each != id);
                    crowd::done(id);
                    let e = match checked {
                        Ok(Ok(accepted)) => return Ok((peer, accepted)),
                        Ok(Err(e)) => e,
                        Err(Aborted) => WireError::AuthRefused {
                            peer: peer.to_string(),
                            why: "closed to make room for newer connections presenting a token"
                                .into(),
                        },
                    };
                    self.untold.refused(e, refused);
                }
            }
        }
    }

    /// Starts checking a new connection, first closing the oldest being
    /// checked if there are [`MAX_CHECKING`] already.
    #[cfg_attr(not(feature = "tls"), allow(clippy::clone_on_copy))]
    fn check(&mut self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        if self.oldest_first.len() >= MAX_CHECKING {
            if let Some((_, oldest)) = self.oldest_first.pop_front() {
                oldest.abort();
            }
        }
        let (secrets, tls) = (self.secrets.clone(), self.tls.clone());
        let (checked, abort) =
            futures_util::future::abortable(check(stream, peer, secrets, tls, self.per_peer));
        let id = crowd::admit(abort.clone(), self.port, MAX_CHECKING);
        self.oldest_first.push_back((id, abort));
        self.checking.push(Box::pin(async move { (id, peer, checked.await) }));
    }
}

impl Drop for Listener {
    /// Its port closes: what it was checking is checked no more.
    fn drop(&mut self) {
        for (id, _) in &self.oldest_first {
            crowd::done(*id);
        }
    }
}

/// Whether `accept` failed for a reason that passes: a resource short for
/// now (descriptors, buffers, memory), or the connection at the head of
/// the queue gone or unreachable (which Linux reports through `accept`).
fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ETIMEDOUT
        )
    )
}

/// Refuses every connection to `listener`'s port from now on, and tells
/// `refused`: the token is good for one connection, and it has been used.
/// Runs until dropped (with the worker's connection), or until the port
/// breaks (closed then, instead of failing over and over).
pub(crate) async fn refuse_all(mut listener: Listener, mut refused: impl FnMut(WireError)) {
    loop {
        match listener.next_with_token(&mut refused).await {
            // The right token, a second time: closed all the same.
            Ok((peer, _)) => {
                let why = "this launch's token, used already".into();
                listener
                    .untold
                    .refused(WireError::AuthRefused { peer: peer.to_string(), why }, &mut refused)
            }
            Err(e) => {
                tracing::warn!(error = %e, "a worker's port failed; it is closed");
                return;
            }
        }
    }
}

/// A worker's connection, its token checked.
pub(crate) enum Accepted {
    /// In the clear: the socket itself.
    Plain(std::net::TcpStream),
    /// Over TLS, its handshake done.
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl Accepted {
    /// The socket the session runs over, and the TLS it speaks (in the
    /// stream itself: `wire/stream/secure.rs`).
    pub(crate) fn into_socket(self) -> std::io::Result<Socket> {
        match self {
            Accepted::Plain(stream) => Ok(std::os::fd::OwnedFd::from(stream).into()),
            #[cfg(feature = "tls")]
            Accepted::Tls(tls) => {
                let (tcp, tls) = tls.into_inner();
                Ok(Socket::tls(tcp.into_std()?, tls))
            }
        }
    }
}

/// Reads the token a connection presents (after the TLS handshake, if
/// `tls`) and compares it with `token`, all within `limit`.
#[cfg_attr(not(feature = "tls"), allow(irrefutable_let_patterns))]
async fn check(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    secrets: std::sync::Arc<(String, String)>,
    tls: Secure,
    limit: Duration,
) -> Result<Accepted, WireError> {
    let refuse = |why: String| WireError::AuthRefused { peer: peer.to_string(), why };
    let _ = stream.set_nodelay(true);
    // A worker whose host is gone is noticed (the connection fails) even
    // when nothing is being sent.
    if let Err(e) = crate::os::keep_alive(std::os::fd::AsFd::as_fd(&stream)) {
        tracing::debug!(error = %e, "no keepalive on a worker's connection");
    }
    let checked = async {
        match tls {
            None => {
                let mut stream = stream;
                answer_token(&mut stream, &secrets).await?;
                Ok(Accepted::Plain(stream.into_std().map_err(|e| e.to_string())?))
            }
            #[cfg(feature = "tls")]
            Some(tls) => {
                let handshake = tls.acceptor.accept(stream).await;
                let mut stream = handshake.map_err(|e| format!("TLS: {e}"))?;
                answer_token(&mut stream, &secrets).await?;
                Ok(Accepted::Tls(Box::new(stream)))
            }
        }
    };
    let accepted = match tokio::time::timeout(limit, checked).await {
        Err(_) => return Err(refuse(format!("no token within {limit:?}"))),
        Ok(Err(why)) => return Err(refuse(why)),
        Ok(Ok(done)) => done,
    };
    if let Accepted::Plain(stream) = &accepted {
        stream.set_nonblocking(false).map_err(|e| refuse(e.to_string()))?;
    }
    Ok(accepted)
}
