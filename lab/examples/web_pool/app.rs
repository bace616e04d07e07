//! The application of `examples/web_pool`, shared with its test
//! (`tests/web_pool.rs`): an actix-web server whose handler hands a
//! CPU-bound job to a pool of worker processes and answers JSON.

use std::net::SocketAddr;

use actix::prelude::*;
use actix_web::{web, App, HttpResponse, HttpServer};
use actix_webworker::{
    Entry, Parent, Protocol, Received, Requests, SpawnError, WorkerActor, WorkerAddrExt,
    WorkerError, WorkerPool,
};
use serde::{Deserialize, Serialize};

pub struct Jobs;

impl Protocol for Jobs {
    type ToWorker = ();
    type FromWorker = ();
}

/// How many primes are below `n`; answered by a worker process.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Counted")]
pub struct CountPrimes(pub u64);

/// The answer, and the worker process that computed it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub n: u64,
    pub primes: u64,
    pub pid: u32,
}

/// What a failed request answers (with 503).
#[derive(Serialize, Deserialize, Debug)]
pub struct Failed {
    pub error: String,
    /// The signal that ended the worker that had the request, if that is
    /// why it failed.
    pub signal: Option<i32>,
}

// ---- the worker -----------------------------------------------------------

pub struct Counter;

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Received<()>> for Counter {
    type Result = ();

    fn handle(&mut self, _: Received<()>, _: &mut Context<Self>) {}
}

impl Handler<CountPrimes> for Counter {
    type Result = MessageResult<CountPrimes>;

    fn handle(&mut self, msg: CountPrimes, _: &mut Context<Self>) -> MessageResult<CountPrimes> {
        let primes =
            (2..msg.0).filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0)).count();
        MessageResult(Counted { n: msg.0, primes: primes as u64, pid: std::process::id() })
    }
}

impl WorkerActor for Counter {
    type Protocol = Jobs;

    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<CountPrimes>();
    }
}

/// The worker entry, for `run_if_worker`.
pub fn entry() -> Entry {
    Entry::new("primes", |_: Parent<Jobs>| Counter)
}

// ---- the parent -----------------------------------------------------------

/// The pool the handlers share.
pub fn pool(members: usize) -> Result<Addr<WorkerPool<Jobs>>, SpawnError> {
    WorkerPool::<Jobs>::builder().entry("primes").size(members).max_in_flight_per_worker(4).start()
}

/// `GET /primes/{n}`: the count, computed in a worker process.
async fn primes(pool: web::Data<Addr<WorkerPool<Jobs>>>, n: web::Path<u64>) -> HttpResponse {
    match pool.ask(CountPrimes(n.into_inner())).await {
        Ok(counted) => HttpResponse::Ok().json(counted),
        Err(e) => {
            let signal = match &e {
                WorkerError::Exited(status) => status.signal,
                _ => None,
            };
            HttpResponse::ServiceUnavailable().json(Failed { error: e.to_string(), signal })
        }
    }
}

/// Starts the server on `addr` (port 0: any free one), on one thread of
/// its own; returns it, to be run, and where it listens.
pub fn server(
    pool: Addr<WorkerPool<Jobs>>,
    addr: &str,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(pool.clone()))
            .route("/primes/{n}", web::get().to(primes))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?;
    let bound = server.addrs()[0];
    Ok((server.run(), bound))
}
