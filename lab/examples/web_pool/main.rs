//! An actix-web server that hands CPU-bound requests to a pool of worker
//! processes: `GET /primes/{n}` counts the primes below `n` in a worker and
//! answers JSON with the count and the worker's pid.
//!
//! `cargo run --release -p actix-webworker-lab --example web_pool` starts it
//! on a free port, sends
//! it 200 requests with awc, 16 at a time, prints what came back, and
//! stops. `-- serve 127.0.0.1:8080` serves until interrupted instead
//! (`curl 127.0.0.1:8080/primes/100000`).

mod app;

use std::collections::BTreeMap;

use actix_webworker::{run_if_worker, Join, WorkerAddrExt};
use futures_util::stream::{FuturesUnordered, StreamExt};

fn main() -> std::io::Result<()> {
    run_if_worker([app::entry()]);
    let args: Vec<String> = std::env::args().skip(1).collect();
    actix_web::rt::System::new().block_on(async move {
        let pool = app::pool(std::thread::available_parallelism().map_or(1, |n| n.get()))
            .expect("the pool starts");
        if args.first().map(String::as_str) == Some("serve") {
            let addr = args.get(1).map_or("127.0.0.1:8080", String::as_str);
            let (server, bound) = app::server(pool.clone(), addr)?;
            println!("serving on http://{bound}/primes/100000");
            return server.await;
        }
        let (server, bound) = app::server(pool.clone(), "127.0.0.1:0")?;
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let client = awc::Client::default();
        let mut by_pid = BTreeMap::<u32, usize>::new();
        let mut in_flight = FuturesUnordered::new();
        for i in 0..200u64 {
            let url = format!("http://{bound}/primes/{}", 20_000 + i);
            let client = client.clone();
            in_flight.push(async move {
                let mut response = client.get(url).send().await.expect("answered");
                response.json::<app::Counted>().await.expect("JSON")
            });
            if in_flight.len() == 16 {
                let counted = in_flight.next().await.expect("in flight");
                *by_pid.entry(counted.pid).or_default() += 1;
            }
        }
        while let Some(counted) = in_flight.next().await {
            *by_pid.entry(counted.pid).or_default() += 1;
        }
        for (pid, n) in &by_pid {
            println!("worker {pid} answered {n} requests");
        }
        handle.stop(true).await;
        pool.terminate();
        let _ = pool.send(Join).await;
        Ok(())
    })
}
