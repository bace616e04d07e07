//! A worker's data (`WorkerBuilder::data`, Node's `workerData`): the
//! typed value a worker is started with, read by `Parent::data`.

use actix::prelude::*;
use actix_webworker::{
    Ask, Codec, DataError, Entry, Limits, NoPosts, Parent, Protocol, RestartPolicy, SpawnError,
    WireError, Worker, WorkerActor, WorkerAddrExt, WorkerBuilder, WorkerPool,
};
use libtest_mimic::Trial;
use serde::{Deserialize, Serialize};

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    let mut tests =
        crate::with_feature!("tcp", trials![data::a_remote_worker_reads_its_data_over_tcp]);
    tests.extend(crate::trials![
        data::a_worker_reads_the_data_it_was_started_with,
        data::data_of_another_type_is_a_typed_error_naming_the_type,
        data::a_worker_started_without_data_is_told_so,
        data::data_larger_than_a_message_is_refused_at_start,
        data::every_member_of_a_pool_gets_the_same_data,
        data::a_restarted_worker_reads_the_same_data,
        data::a_python_worker_reads_its_data,
    ]);
    tests
}

/// What the tests give their workers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Config {
    pub scale: u32,
    pub model: String,
    pub secret: String,
    pub weights: Vec<f64>,
}

/// What a worker may (wrongly) take its data for.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Other {
    pub scale: u64,
}

/// Answered with the worker's data as a `Config`, or the error's text.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Result<Config, String>")]
pub struct AsConfig;

/// Answered with the worker's data as an `Other`, or the error's text.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Result<Other, String>")]
pub struct AsOther;

/// Whether `text` is in the worker's arguments or environment.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "bool")]
pub struct Exposed(pub String);

pub struct Given;

impl Protocol for Given {
    type ToWorker = NoPosts;
    type FromWorker = NoPosts;
}

/// Reads its data when asked, and once as it is made (where a worker
/// usually does): what it read then is `at_start`.
pub struct Reader {
    parent: Parent<Given>,
    at_start: Result<Config, DataError>,
}

impl Actor for Reader {
    type Context = Context<Self>;
}

impl Handler<AsConfig> for Reader {
    type Result = Result<Config, String>;

    fn handle(&mut self, _: AsConfig, _: &mut Context<Self>) -> Self::Result {
        let now = self.parent.data::<Config>();
        assert_eq!(now, self.at_start, "the same each time it is read");
        now.map_err(|e| e.to_string())
    }
}

impl Handler<AsOther> for Reader {
    type Result = Result<Other, String>;

    fn handle(&mut self, _: AsOther, _: &mut Context<Self>) -> Self::Result {
        self.parent.data::<Other>().map_err(|e| e.to_string())
    }
}

impl Handler<Exposed> for Reader {
    type Result = bool;

    fn handle(&mut self, msg: Exposed, _: &mut Context<Self>) -> bool {
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        let environ = std::fs::read("/proc/self/environ").unwrap();
        let found = |bytes: &[u8]| bytes.windows(msg.0.len()).any(|w| w == msg.0.as_bytes());
        found(&cmdline) || found(&environ) || std::env::vars().any(|(_, v)| v.contains(&msg.0))
    }
}

impl WorkerActor for Reader {
    type Protocol = Given;

    fn requests(requests: &mut actix_webworker::Requests<Self>) {
        requests.answer::<AsConfig>().answer::<AsOther>().answer::<Exposed>();
    }
}

actix_webworker::no_posts!(Reader);

pub fn entries() -> Vec<Entry> {
    vec![Entry::new("data", |parent: Parent<Given>| {
        let at_start = parent.data::<Config>();
        Reader { parent, at_start }
    })]
}

fn config() -> Config {
    Config {
        scale: 3,
        model: "småll ✓".into(),
        secret: "s3cr3t-not-in-argv".into(),
        weights: vec![0.5, -1.25, 1e-300],
    }
}

fn reader() -> WorkerBuilder<Given> {
    Worker::<Given>::builder().entry("data").restart(RestartPolicy::never())
}

/// Over both codecs: the value comes back whole, and never went through
/// the worker's arguments or environment.
pub fn a_worker_reads_the_data_it_was_started_with() {
    run(async {
        for codec in [Codec::Bincode, Codec::Json] {
            let (rec, mut events) = events::<Given>();
            let worker = reader().codec(codec).data(config()).events(rec).start().unwrap();
            assert_eq!(worker.ask(AsConfig).await.unwrap(), Ok(config()));
            assert!(!worker.ask(Exposed(config().secret)).await.unwrap(), "{codec:?}");
            worker.terminate();
            assert!(events.exit().await.success());
        }
    });
}

/// Over TCP (a worker that connects back, as a remote one does), the
/// data comes after the token and the hellos, as over a socketpair.
#[cfg(feature = "tcp")]
pub fn a_remote_worker_reads_its_data_over_tcp() {
    run(async {
        let (rec, mut events) = events::<Given>();
        let worker = reader().transport(loopback()).data(config()).events(rec).start().unwrap();
        assert_eq!(worker.ask(AsConfig).await.unwrap(), Ok(config()));
        assert!(!worker.ask(Exposed(config().secret)).await.unwrap());
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn data_of_another_type_is_a_typed_error_naming_the_type() {
    run(async {
        let (rec, mut events) = events::<Given>();
        let worker = reader().data(config()).events(rec).start().unwrap();
        let other = worker.ask(AsOther).await.unwrap();
        let expected = DataError::OtherType { ty: std::any::type_name::<Other>() };
        assert_eq!(other, Err(expected.to_string()));
        assert!(expected.to_string().contains("data::Other"), "{expected}");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn a_worker_started_without_data_is_told_so() {
    run(async {
        let (rec, mut events) = events::<Given>();
        let worker = reader().events(rec).start().unwrap();
        assert_eq!(worker.ask(AsConfig).await.unwrap(), Err(DataError::Missing.to_string()));
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// Bounded by the worker's largest message: refused by `start()`, before
/// any process, for one worker and for a pool.
pub fn data_larger_than_a_message_is_refused_at_start() {
    run(async {
        let big = Config { weights: vec![1.0; 20_000], ..config() };
        let limits = Limits::default().max_message_size(64 * 1024);
        let refused = reader().limits(limits).data(big.clone()).start();
        match refused {
            Err(SpawnError::Data(WireError::TooLarge { limit, .. })) => assert_eq!(limit, 65_536),
            other => panic!("expected Data(TooLarge), got {:?}", other.map(drop)),
        }
        let pool = WorkerPool::<Given>::builder().entry("data").limits(limits).data(big).start();
        assert!(matches!(pool, Err(SpawnError::Data(WireError::TooLarge { .. }))));
    });
}

pub fn every_member_of_a_pool_gets_the_same_data() {
    run(async {
        let pool = WorkerPool::<Given>::builder().entry("data").size(2).data(config());
        let pool = pool.start().unwrap();
        let answers = futures_util::future::join_all((0..8).map(|_| pool.send(Ask::new(AsConfig))));
        for answer in answers.await {
            assert_eq!(answer.unwrap().unwrap(), Ok(config()));
        }
        pool.terminate();
        assert!(pool.send(actix_webworker::Join).await.unwrap().success());
    });
}

/// README, `workerData`: "each worker started gets it (restarts and every
/// member of a pool too)". A worker killed and restarted by its policy:
/// the new process reads the same data, as it is made and when asked.
pub fn a_restarted_worker_reads_the_same_data() {
    run(async {
        let (rec, mut events) = events::<Given>();
        let worker = Worker::<Given>::builder()
            .entry("data")
            .restart(fast(actix_webworker::Restart::OnFailure))
            .data(config())
            .events(rec)
            .start()
            .unwrap();
        assert_eq!(worker.ask(AsConfig).await.unwrap(), Ok(config()));
        let first = worker.send(actix_webworker::Stats).await.unwrap().members[0].pid;
        assert!(kill(first, Signal::SIGKILL));
        assert_eq!(events.exit().await.signal, Some(9));
        events.online().await;
        // The `Reader` asserts that what it reads now is what it read as it
        // was made, in the new process.
        assert_eq!(worker.ask(AsConfig).await.unwrap(), Ok(config()));
        let second = worker.send(actix_webworker::Stats).await.unwrap().members[0].pid;
        assert_ne!(second, first, "a new process answered");
        assert!(!worker.ask(Exposed(config().secret)).await.unwrap());
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// The conformance protocol, with a request the Python worker answers
/// with its data.
pub struct PyData;

impl Protocol for PyData {
    type ToWorker = crate::conformance::Job;
    type FromWorker = crate::conformance::Done;

    fn requests(declare: &mut actix_webworker::Declare) {
        declare.request::<ReadData>().named("conformance.data");
    }
}

/// Answered by the Python worker with its data (`parent.data`).
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Option<Config>")]
pub struct ReadData;

pub fn a_python_worker_reads_its_data() {
    if !crate::conformance::have_python() {
        return;
    }
    run(async {
        for data in [Some(config()), None] {
            let builder = crate::conformance::python_worker::<PyData>();
            let builder = match &data {
                Some(data) => builder.data(data.clone()),
                None => builder,
            };
            let (rec, mut events) = events::<PyData>();
            let worker = builder.restart(RestartPolicy::never()).events(rec).start().unwrap();
            assert_eq!(worker.ask(ReadData).await.unwrap(), data);
            worker.terminate();
            assert!(events.exit().await.success());
        }
    });
}
