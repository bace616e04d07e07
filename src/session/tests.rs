//! Two sessions over `UnixStream::pair()`, in one process: the protocol's
//! behaviour without a child process.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::Message;
use serde::{Deserialize, Serialize};

use super::answers::{Handlers, Reply};
use super::sender::{awaited, Encoding, Sender};
use super::{open, Common, Finish, Flow, Opened, Session, Side, Then, Turn, Why};
use crate::error::{ErrorReport, WireError, WorkerError};
use crate::protocol::Codec;
use crate::protocol::{tag_of, Received, Request};
use crate::wire::encode::encode;
use crate::wire::envelope::{self, Header, Kind};
use crate::wire::outbox::Outbox;

const MAX: usize = 1 << 20;

/// Records what arrives.
#[derive(Default)]
struct Recorder {
    posts: Vec<Received<String>>,
    errors: Vec<WireError>,
    reports: Vec<ErrorReport>,
    closings: usize,
    /// How many times `flush` came with posts gathered since the last.
    flushes_with_posts: usize,
    unflushed: usize,
}

impl Side for Recorder {
    type Incoming = String;
    const ONLY_HERE: &'static [Kind] = &[Kind::Error, Kind::Closing, Kind::Terminate];

    fn post(&mut self, msg: Received<String>, _: crate::held::Holds) {
        self.posts.push(msg);
        self.unflushed += 1;
    }

    fn wire_error(&mut self, e: WireError) {
        self.errors.push(e);
    }

    fn flush(&mut self) {
        if self.unflushed > 0 {
            self.flushes_with_posts += 1;
            self.unflushed = 0;
        }
    }

    fn report(&mut self, report: ErrorReport) {
        self.reports.push(report);
    }

    fn closing(&mut self) {
        self.closings += 1;
    }

    fn terminate(&mut self) -> Flow {
        Flow::End(Why::Terminated)
    }
}

/// A side that takes only what both sides take: everything else is
/// unexpected.
struct PostsOnly(Vec<WireError>);

impl Side for PostsOnly {
    type Incoming = String;
    const ONLY_HERE: &'static [Kind] = &[];

    fn post(&mut self, _: Received<String>, _: crate::held::Holds) {}

    fn wire_error(&mut self, e: WireError) {
        self.0.push(e);
    }
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Double(u64);

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct NobodyAnswers;

const ENCODING: Encoding =
    Encoding { codec: Codec::Bincode, max_message_size: MAX, descriptors: true };

fn common(handlers: Handlers) -> Common {
    common_over(Outbox::new(usize::MAX, usize::MAX), handlers)
}

fn common_over(outbox: Outbox, handlers: Handlers) -> Common {
    Common {
        sender: Sender::new(Arc::new(outbox), ENCODING),
        handlers: Rc::new(handlers),
        max_shared_bytes: usize::MAX,
        span: tracing::Span::none(),
    }
}

/// Both hellos over a socketpair, with these fingerprints.
async fn connect(
    ours: u64,
    theirs: u64,
) -> (Result<Opened, Option<WireError>>, Result<Opened, Option<WireError>>) {
    let (a, b) = UnixStream::pair().unwrap();
    tokio::join!(
        open(a, MAX, ours, Turn::First(Codec::Bincode), Then::nothing()),
        open(b, MAX, theirs, Turn::AfterPeer, Then::nothing())
    )
}

/// Two sessions over a socketpair, after their hellos, answering with
/// `handlers` each.
async fn sessions<A: Side, B: Side>(
    (handlers_a, side_a): (Handlers, A),
    (handlers_b, side_b): (Handlers, B),
) -> (Session<A>, Session<B>) {
    let (a, b) = connect(1, 1).await;
    let (a, b) = (a.unwrap(), b.unwrap());
    (
        Session::start(a.reader, a.writer, common(handlers_a), side_a),
        Session::start(b.reader, b.writer, common(handlers_b), side_b),
    )
}

/// A session over a socketpair, after the hellos, recording what it is
/// told; the other end, opened (kept, the connection stays up), and its
/// socket, to write raw frames to.
async fn receiving_raw() -> (Session<Recorder>, Opened, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    let raw = a.try_clone().unwrap();
    let (a, b) = tokio::join!(
        open(a, MAX, 1, Turn::First(Codec::Bincode), Then::nothing()),
        open(b, MAX, 1, Turn::AfterPeer, Then::nothing())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    (Session::start(b.reader, b.writer, common(none()), Recorder::default()), a, raw)
}

fn none() -> Handlers {
    Handlers::new(|| None)
}

fn post(outbox: &Outbox, text: &str, fds: Vec<OwnedFd>) {
    let bytes =
        encode(Codec::Bincode, Header::post(fds.len()).unwrap(), &text.to_owned(), MAX).unwrap();
    outbox.push(bytes, fds).unwrap();
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    actix_rt::System::new().block_on(async move {
        tokio::time::timeout(Duration::from_secs(60), f).await.expect("the test hung")
    })
}

#[test]
fn hellos_agree_and_the_parent_checks_the_peer() {
    run(async {
        let (a, b) = connect(7, 7).await;
        assert!(a.is_ok() && b.is_ok());
        // A peer the parent's check refuses (not the process it started).
        let (a, b) = UnixStream::pair().unwrap();
        let refuse = |hello: &envelope::Hello| {
            assert_eq!((hello.pid, hello.fingerprint), (std::process::id(), 7));
            Err(WireError::WrongPeer { ours: 1, theirs: hello.pid })
        };
        let then = Then { data: None, peer: &refuse };
        let (a, _b) = tokio::join!(
            open(a, MAX, 7, Turn::First(Codec::Bincode), then),
            open(b, MAX, 7, Turn::AfterPeer, Then::nothing())
        );
        assert!(matches!(a.map(drop), Err(Some(WireError::WrongPeer { ours: 1, .. }))));
    });
}

#[test]
fn a_peer_of_another_build_is_refused_on_both_sides() {
    run(async {
        let (a, b) = connect(7, 8).await;
        for (side, result) in [("first", a), ("second", b)] {
            match result {
                Err(Some(WireError::FingerprintMismatch { .. })) => {}
                Err(e) => panic!("{side}: {e:?}"),
                Ok(_) => panic!("{side}: accepted a peer of another build"),
            }
        }
    });
}

#[test]
fn requests_are_answered_both_ways_and_unknown_ones_fail() {
    run(async {
        let mut doubles = none();
        doubles.insert::<Double>(tag_of::<Double>(), |req, reply| reply.answer(&(req.0 * 2)));
        let mut triples = none();
        triples.insert::<Double>(tag_of::<Double>(), |req, reply| reply.answer(&(req.0 * 3)));
        let (mut one, mut two) =
            sessions((doubles, Recorder::default()), (triples, Recorder::default())).await;
        let from_two = ask(&one, &Double(21));
        let from_one = ask(&two, &Double(5));
        let unknown = ask(&one, &NobodyAnswers);
        let answers = async { (from_two.await, from_one.await, unknown.await) };
        // Both sides read (and answer) until the answers are in.
        let results = tokio::select! {
            results = answers => results,
            flows = async { tokio::join!(one.run(), two.run()) } => {
                panic!("a session ended: {flows:?}")
            }
        };
        assert_eq!(results.0.unwrap(), 63);
        assert_eq!(results.1.unwrap(), 10);
        assert!(matches!(results.2, Err(WorkerError::Unhandled(_))), "{:?}", results.2);
    });
}

/// How the tests' requests are named when unanswered.
fn named() -> String {
    "a test's request".into()
}

/// Sends request `req` from `session`'s side; resolves with its answer.
fn ask<R: Request>(
    session: &Session<Recorder>,
    req: &R,
) -> impl std::future::Future<Output = Result<R::Answer, WorkerError>> + use<R> {
    let pending = &session.sender().pending;
    let id = pending.next_id();
    let answer = awaited::<R::Answer>(pending, (id, named), Some(Duration::from_secs(30)));
    let bytes = encode(Codec::Bincode, Header::request(id, tag_of::<R>()), req, MAX).unwrap();
    session.sender().outbox.push(bytes, Vec::new()).unwrap();
    answer
}

#[test]
fn a_request_given_up_is_cancelled_on_the_other_side_and_costs_nothing_there() {
    run(async {
        // The answering side holds each reply, and notes when one is
        // cancelled.
        let held = Rc::new(RefCell::new(Vec::new()));
        let stopped = Rc::new(RefCell::new(Vec::new()));
        let mut holds = none();
        {
            let (held, stopped) = (held.clone(), stopped.clone());
            // 21 starts and can be stopped; 22 waits for its turn (as a
            // request queued for a busy actor).
            holds.insert::<Double>(tag_of::<Double>(), move |req, mut reply| {
                if req.0 == 21 {
                    let stopped = stopped.clone();
                    reply.on_cancel(move || stopped.borrow_mut().push(req.0));
                }
                held.borrow_mut().push(reply);
            });
        }
        let (a, b) = connect(1, 1).await;
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut asking = Session::start(a.reader, a.writer, common(none()), Recorder::default());
        // A bound of two: the replies owed hold the reading back.
        let bounded = common_over(Outbox::new(2, usize::MAX), holds);
        let mut answering = Session::start(b.reader, b.writer, bounded, Recorder::default());
        let pending = asking.sender().pending.clone();
        let mut given_up = Vec::new();
        for n in [21, 22] {
            let id = pending.next_id();
            given_up.push(awaited::<u64>(&pending, (id, named), Some(Duration::from_millis(50))));
            let bytes =
                encode(Codec::Bincode, Header::request(id, tag_of::<Double>()), &Double(n), MAX)
                    .unwrap();
            asking.sender().outbox.push(bytes, Vec::new()).unwrap();
        }
        let results = tokio::select! {
            results = futures_util::future::join_all(given_up) => results,
            flows = async { tokio::join!(asking.run(), answering.run()) } => {
                panic!("a session ended: {flows:?}")
            }
        };
        for result in results {
            assert!(matches!(result, Err(WorkerError::Timeout(_))), "{result:?}");
        }
        // The cancels reach the other side: the stop of the one started
        // runs; the one waiting for its turn is no longer wanted (it is
        // not started). The replies, once dropped, send nothing and are
        // owed no more.
        let reached = tokio::select! {
            _ = async {
                while stopped.borrow().is_empty()
                    || held.borrow().iter().any(|reply: &Reply| reply.wanted())
                {
                    tokio::task::yield_now().await;
                }
            } => true,
            _ = async { tokio::join!(asking.run(), answering.run()) } => false,
        };
        assert!(reached);
        assert_eq!(*stopped.borrow(), [21]);
        assert!(answering.sender().outbox.replies_over(), "owed while held");
        held.borrow_mut().clear();
        assert!(!answering.sender().outbox.replies_over(), "forgiven once dropped");
        let mut taken = std::collections::VecDeque::new();
        assert!(!answering.sender().outbox.try_take_batch(&mut taken), "nothing sent");
    });
}

#[test]
fn terminate_ends_the_session_after_what_came_before() {
    run(async {
        let (sender, mut receiver) =
            sessions((none(), PostsOnly(vec![])), (none(), Recorder::default())).await;
        let outbox = sender.sender().outbox.clone();
        post(&outbox, "before", vec![]);
        outbox.push(envelope::bare(Kind::Error), vec![]).unwrap();
        let report = ErrorReport::new("boom".to_owned());
        outbox
            .push(encode(Codec::Bincode, Header::bare(Kind::Error), &report, MAX).unwrap(), vec![])
            .unwrap();
        outbox.push(envelope::bare(Kind::Closing), vec![]).unwrap();
        outbox.push(envelope::bare(Kind::Terminate), vec![]).unwrap();
        post(&outbox, "after", vec![]);
        assert_eq!(receiver.run().await, Why::Terminated);
        let got = receiver.finish(Finish::Now).await.side;
        let texts: Vec<_> = got.posts.iter().map(|p| p.data.as_str()).collect();
        assert_eq!(texts, ["before"]);
        assert_eq!(got.reports.len(), 1);
        assert_eq!(got.reports[0].message, "boom");
        assert_eq!(got.closings, 1);
        // The bare error frame had no report in it: told, and read past.
        assert_eq!(got.errors.len(), 1, "{:?}", got.errors);
        drop(sender);
    });
}

#[test]
fn a_payload_that_does_not_decode_is_told_and_the_session_reads_on() {
    run(async {
        let (sender, mut receiver) =
            sessions((none(), PostsOnly(vec![])), (none(), PostsOnly(vec![]))).await;
        let outbox = sender.sender().outbox.clone();
        // Undecodable as a String: told, and the connection goes on.
        outbox
            .push(
                encode(Codec::Bincode, Header::post(0).unwrap(), &[0xffu8; 3], MAX).unwrap(),
                vec![],
            )
            .unwrap();
        outbox
            .push(encode(Codec::Bincode, Header::post(0).unwrap(), &"after", MAX).unwrap(), vec![])
            .unwrap();
        sender.finish(Finish::Drain).await;
        assert_eq!(receiver.run().await, Why::PeerClosed);
        let errors = receiver.finish(Finish::Now).await.side.0;
        assert!(matches!(errors.as_slice(), [WireError::Decode(_)]), "{errors:?}");
    });
}

/// Every kind a side does not take ends its session as broken, named, and
/// nothing after it is read: a peer owed a Pong for every Ping it sends
/// could grow this side without bound.
#[test]
fn a_kind_the_side_does_not_take_ends_the_session() {
    let report = ErrorReport::new("boom".to_owned());
    let frames: Vec<(&str, bytes::Bytes)> = vec![
        ("terminate", envelope::bare(Kind::Terminate)),
        ("closing", envelope::bare(Kind::Closing)),
        ("ping", envelope::bare(Kind::Ping)),
        ("pong", envelope::bare(Kind::Pong)),
        ("hello", envelope::hello(1, Codec::Bincode, 0).into()),
        (
            "error report",
            encode(Codec::Bincode, Header::bare(Kind::Error), &report, MAX).unwrap().contiguous(),
        ),
    ];
    for (name, bytes) in frames {
        run(async {
            let (sender, mut receiver) =
                sessions((none(), PostsOnly(vec![])), (none(), PostsOnly(vec![]))).await;
            let outbox = sender.sender().outbox.clone();
            outbox.push(bytes, vec![]).unwrap();
            outbox
                .push(
                    encode(Codec::Bincode, Header::post(0).unwrap(), &"after", MAX).unwrap(),
                    vec![],
                )
                .unwrap();
            sender.finish(Finish::Drain).await;
            assert_eq!(receiver.run().await, Why::Broken, "{name}");
            let errors = receiver.finish(Finish::Now).await.side.0;
            assert!(
                matches!(errors.as_slice(), [WireError::Unexpected(n)] if *n == name),
                "{name}: {errors:?}"
            );
        });
    }
}

#[test]
fn broken_framing_ends_the_session() {
    run(async {
        let (mut receiver, a, raw) = receiving_raw().await;
        // A WebSocket binary frame holding no envelope: two bytes.
        (&raw).write_all(&crate::wire::wsframe::binary_frame(&[9, 9])).unwrap();
        assert_eq!(receiver.run().await, Why::Broken);
        let got = receiver.finish(Finish::Now).await.side;
        assert_eq!(got.errors.len(), 1, "{:?}", got.errors);
        drop(a);
    });
}

mod posts;

mod yields;
