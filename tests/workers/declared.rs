//! Requests a protocol declares (`Protocol::requests`): each answered or
//! the worker refuses to start, naming it; wire names of their own, which
//! outlive a rename of the Rust type; requests the parent must serve; and
//! a worker that only answers requests (`NoPosts`, `no_posts!`).

use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{
    wire_name, Codec, Declare, Entry, Event, NoPosts, Parent, Protocol, Requests, RestartPolicy,
    SpawnError, WireError, Worker, WorkerActor, WorkerAddrExt, WorkerBuilder, WorkerError,
};
use libtest_mimic::Trial;
use serde::{Deserialize, Serialize};

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        declared::a_request_only_worker_answers,
        declared::a_declared_request_not_answered_refuses_the_start_naming_it,
        declared::a_declared_request_the_parent_does_not_serve_refuses_the_start,
        declared::a_request_its_worker_does_not_answer_is_named_not_hashed,
        declared::a_renamed_type_with_the_same_wire_name_reaches_a_rust_worker,
        declared::a_renamed_type_with_the_same_wire_name_reaches_a_python_worker,
    ]
}

/// The sum of the numbers.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Sum(pub Vec<u64>);

/// The product; its wire name is `calc.mul`.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "i64")]
pub struct Mul(pub i64, pub i64);

/// Declared by no protocol, answered by no worker.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u32")]
pub struct Stray;

/// A calculator: requests only, no posts either way.
pub struct Calc;

impl Protocol for Calc {
    type ToWorker = NoPosts;
    type FromWorker = NoPosts;

    fn requests(declare: &mut Declare) {
        declare.request::<Sum>();
        declare.request::<Mul>().named("calc.mul");
    }
}

/// Answers both of the calculator's requests, and takes no posts.
pub struct Calculator {
    _parent: Parent<Calc>,
}

impl Actor for Calculator {
    type Context = Context<Self>;
}

impl Handler<Sum> for Calculator {
    type Result = u64;

    fn handle(&mut self, msg: Sum, _: &mut Context<Self>) -> u64 {
        msg.0.iter().sum()
    }
}

impl Handler<Mul> for Calculator {
    type Result = i64;

    fn handle(&mut self, msg: Mul, _: &mut Context<Self>) -> i64 {
        msg.0 * msg.1
    }
}

impl WorkerActor for Calculator {
    type Protocol = Calc;

    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<Sum>().answer::<Mul>();
    }
}

actix_webworker::no_posts!(Calculator);

/// Answers `Sum` only: `Mul` is declared, and forgotten here.
pub struct Forgetful;

impl Actor for Forgetful {
    type Context = Context<Self>;
}

impl Handler<Sum> for Forgetful {
    type Result = u64;

    fn handle(&mut self, msg: Sum, _: &mut Context<Self>) -> u64 {
        msg.0.iter().sum()
    }
}

impl WorkerActor for Forgetful {
    type Protocol = Calc;

    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<Sum>();
    }
}

actix_webworker::no_posts!(Forgetful);

/// The calculator as a later parent knows it: `Mul` renamed `Product` in
/// Rust, under the same wire name. Its serde name stays `Mul`, so that a
/// Rust worker built from the old name has the same shapes.
pub mod renamed {
    use super::*;

    #[derive(Message, Serialize, Deserialize, Debug)]
    #[rtype(result = "i64")]
    #[serde(rename = "Mul")]
    pub struct Product(pub i64, pub i64);

    pub struct Calc;

    impl Protocol for Calc {
        type ToWorker = NoPosts;
        type FromWorker = NoPosts;

        fn requests(declare: &mut Declare) {
            declare.request::<super::Sum>();
            declare.request::<Product>().named("calc.mul");
        }
    }
}

/// A protocol whose worker asks the parent `Greet`, declared.
pub struct Greeting;

/// Worker → parent.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "String")]
pub struct Greet(pub String);

impl Protocol for Greeting {
    type ToWorker = NoPosts;
    type FromWorker = NoPosts;

    fn requests(declare: &mut Declare) {
        declare.request_to_parent::<Greet>().named("greet");
    }
}

pub fn entries() -> Vec<Entry> {
    vec![
        Entry::new("calculator", |parent| Calculator { _parent: parent }),
        Entry::new("forgetful", |_: Parent<Calc>| Forgetful),
    ]
}

fn calculator<P: Protocol>(entry: &str) -> WorkerBuilder<P> {
    Worker::<P>::builder().entry(entry).restart(RestartPolicy::never())
}

pub fn a_request_only_worker_answers() {
    run(async {
        let (rec, mut events) = events::<Calc>();
        let worker = calculator::<Calc>("calculator").events(rec).start().unwrap();
        assert_eq!(worker.ask(Sum(vec![1, 2, 3])).await.unwrap(), 6);
        assert_eq!(worker.ask(Mul(6, 7)).await.unwrap(), 42);
        assert_eq!(wire_name::<Calc, Mul>(), "calc.mul");
        assert_eq!(wire_name::<Calc, Sum>(), std::any::type_name::<Sum>());
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// A worker that does not answer `Mul`, which its protocol declares: it
/// refuses to start, and the parent is told which request, by its Rust
/// path, as an error certain to repeat (no restart, asks fail at once).
pub fn a_declared_request_not_answered_refuses_the_start_naming_it() {
    run(async {
        let (rec, mut events) = events::<Calc>();
        let worker = calculator::<Calc>("forgetful")
            .restart(RestartPolicy::default())
            .events(rec)
            .start()
            .unwrap();
        let asked = worker.ask(Sum(vec![1]));
        let mut refused = None;
        loop {
            match events.next().await {
                Event::WireError(e) => refused = Some(e),
                Event::GaveUp(g) => {
                    assert!(matches!(g.cause, Some(WireError::Unanswered { .. })), "{g:?}");
                    break;
                }
                Event::Online => panic!("a worker that does not answer Mul came online"),
                _ => {}
            }
        }
        let refused = refused.expect("a wire error before giving up");
        match &refused {
            WireError::Unanswered { entry, requests } => {
                assert_eq!(entry, "forgetful");
                assert_eq!(requests, &[std::any::type_name::<Mul>().to_owned()]);
            }
            other => panic!("expected Unanswered, got {other:?}"),
        }
        let said = refused.to_string();
        assert!(said.contains("declared::Mul") && said.contains("WorkerActor::requests"), "{said}");
        // What was asked fails with the cause, not an exit code.
        let asked = tokio::time::timeout(WAIT, asked).await.expect("the ask ends");
        let cause = WorkerError::Wire(refused.clone());
        assert!(matches!(&asked, Err(e) if *e == cause), "{asked:?}");
    });
}

/// A parent that does not serve `Greet`, which its protocol declares the
/// parent answers: `start()` refuses, naming it; with `serve` it starts.
pub fn a_declared_request_the_parent_does_not_serve_refuses_the_start() {
    run(async {
        match Worker::<Greeting>::builder().entry("nothing").start() {
            Err(SpawnError::Unserved(names)) => {
                assert_eq!(names, [std::any::type_name::<Greet>().to_owned()])
            }
            other => panic!("expected Unserved, got {:?}", other.map(drop)),
        }
    });
}

/// `Stray` is asked of a worker that does not answer it: the error names
/// the type, as the asker knows it; a declared one with its wire name.
pub fn a_request_its_worker_does_not_answer_is_named_not_hashed() {
    run(async {
        let (rec, mut events) = events::<Calc>();
        let worker = calculator::<Calc>("calculator").events(rec).start().unwrap();
        match worker.ask(Stray).await {
            Err(WorkerError::Unhandled(name)) => {
                assert_eq!(name, std::any::type_name::<Stray>());
                let said = WorkerError::Unhandled(name).to_string();
                assert!(!said.contains("tag"), "{said}");
            }
            other => panic!("expected Unhandled, got {other:?}"),
        }
        // Through a port as well.
        let mut port = actix_webworker::Port::open(&worker).await.unwrap();
        let through_port = port.ask(Stray).await;
        assert!(
            matches!(&through_port, Err(WorkerError::Unhandled(n)) if n.ends_with("declared::Stray")),
            "{through_port:?}"
        );
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// The parent's `Product` is the worker's `Mul`: the same wire name
/// (and serde name), over both codecs.
pub fn a_renamed_type_with_the_same_wire_name_reaches_a_rust_worker() {
    run(async {
        for codec in [Codec::Bincode, Codec::Json] {
            let (rec, mut events) = events::<renamed::Calc>();
            let builder = calculator::<renamed::Calc>("calculator").codec(codec);
            let worker = builder.events(rec).start().unwrap();
            assert_eq!(worker.ask(renamed::Product(6, 7)).await.unwrap(), 42);
            assert_eq!(worker.ask(Sum(vec![2, 2])).await.unwrap(), 4);
            worker.terminate();
            assert!(events.exit().await.success());
        }
    });
}

/// The Python worker of the conformance scenarios answers `Mul` by the
/// wire name `Conf` declares for it: a parent that renamed the Rust type
/// (serde name and all) still reaches it.
pub fn a_renamed_type_with_the_same_wire_name_reaches_a_python_worker() {
    if !crate::conformance::have_python() {
        return;
    }
    run(async {
        let (rec, mut events) = events::<crate::conformance::Renamed>();
        let worker = crate::conformance::python_worker::<crate::conformance::Renamed>()
            .restart(RestartPolicy::never())
            .events(rec)
            .start()
            .unwrap();
        let product = crate::conformance::Times(6, 7);
        let answer = tokio::time::timeout(Duration::from_secs(30), worker.ask(product)).await;
        assert_eq!(answer.expect("answered in time").unwrap(), 42);
        worker.terminate();
        assert!(events.exit().await.success());
    });
}
