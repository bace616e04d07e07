//! A pipeline of three workers over channels (`MessageChannel`): `parse`
//! reads lines of text into records, `transform` converts each record's
//! temperature, `store` adds them up; the parent wires them together and
//! hears only the result. The records go worker to worker: the parent
//! never sees them.
//!
//! ```text
//!            Job::Parse          Job::Transform              Job::Store
//! parent ───────┬──────────────────────┬─────────────────────────┬──────
//!               ▼                      ▼                         ▼
//!            parse ══ Record ══▶ transform ══ Record ══▶ store ──▶ parent
//!                  (channel 1)                (channel 2)        Total
//! ```
//!
//! `cargo run --example pipeline`

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, Channel, ChannelEnd, ChannelEvent, CloseReason, Entry, Event, MessageChannel,
    Parent, Protocol, Received, Worker, WorkerActor, WorkerAddrExt,
};
use serde::{Deserialize, Serialize};

/// What travels on the channels.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Record {
    city: String,
    celsius: f64,
}

/// An end of a channel of records: it sends and receives them.
type Records = ChannelEnd<Record, Record>;

/// What the parent tells a stage: its part, with its channels' ends.
#[derive(Serialize, Deserialize, Debug)]
enum Job {
    Parse { lines: Vec<String>, out: Records },
    Transform { input: Records, output: Records },
    Store { input: Records },
}

/// What a stage tells the parent.
#[derive(Serialize, Deserialize, Debug)]
enum Said {
    Total { records: u64, fahrenheit: f64 },
}

struct Stages;

impl Protocol for Stages {
    type ToWorker = Job;
    type FromWorker = Said;
}

// ---- the workers: one actor, three parts ------------------------------------

struct Stage {
    parent: Parent<Stages>,
    /// Where a transform sends what it made.
    output: Option<Channel<Record, Record>>,
    records: u64,
    fahrenheit: f64,
}

impl Actor for Stage {
    type Context = Context<Self>;
}

impl WorkerActor for Stage {
    type Protocol = Stages;
}

impl Handler<Received<Job>> for Stage {
    type Result = ();

    fn handle(&mut self, msg: Received<Job>, ctx: &mut Context<Self>) {
        match msg.data {
            Job::Parse { lines, out } => {
                let out = out.open(ctx.address());
                for line in lines {
                    if let Some((city, celsius)) = line.split_once(',') {
                        let celsius = celsius.trim().parse().unwrap_or(f64::NAN);
                        let _ = out.post(Record { city: city.into(), celsius });
                    }
                }
                // After everything posted: the next stage is told.
                out.close();
            }
            Job::Transform { input, output } => {
                self.output = Some(output.open(ctx.address()));
                input.open(ctx.address());
            }
            Job::Store { input } => {
                input.open(ctx.address());
            }
        }
    }
}

impl Handler<ChannelEvent<Record>> for Stage {
    type Result = ();

    fn handle(&mut self, event: ChannelEvent<Record>, _: &mut Context<Self>) {
        match (event, &self.output) {
            // A transform: converts, and passes on.
            (ChannelEvent::Message(msg), Some(output)) => {
                let Record { city, celsius } = msg.data;
                let _ = output.post(Record { city, celsius: celsius * 9.0 / 5.0 + 32.0 });
            }
            // Its input closed: so does its output, after what it posted.
            (ChannelEvent::Closed(closed), Some(output)) => {
                if closed.why == CloseReason::PeerClosed {
                    output.close();
                }
            }
            // The store: adds up, and tells the parent at the end.
            (ChannelEvent::Message(msg), None) => {
                self.records += 1;
                self.fahrenheit += msg.data.celsius;
            }
            (ChannelEvent::Closed(closed), None) if closed.why == CloseReason::PeerClosed => {
                println!("store: its input closed ({:?}), {} records", closed.why, closed.received);
                let total = Said::Total { records: self.records, fahrenheit: self.fahrenheit };
                let _ = self.parent.post(total);
            }
            // The parser's own end, closed by itself; or a message of the
            // other end that did not decode.
            (other, _) => eprintln!("stage: {other:?}"),
        }
    }
}

// ---- the parent ---------------------------------------------------------------

#[actix::main]
async fn main() {
    run_if_worker([Entry::new("stage", |parent| Stage {
        parent,
        output: None,
        records: 0,
        fahrenheit: 0.0,
    })]);

    let start = || Worker::<Stages>::builder().entry("stage").start_with_events().unwrap();
    let ((parse, mut parse_events), (transform, mut transform_events), (store, mut events)) =
        (start(), start(), start());

    // Two channels; each end goes to the worker that holds it, in a post.
    let (to_transform, from_parse) = MessageChannel::<Record, Record>::new().unwrap();
    let (to_store, from_transform) = MessageChannel::<Record, Record>::new().unwrap();
    let lines = ["Oslo, -3.5", "Lisbon, 17", "Cairo, 31.25", "Quito, 14"];
    store.post(Job::Store { input: from_transform });
    transform.post(Job::Transform { input: from_parse, output: to_store });
    parse.post(Job::Parse { lines: lines.map(String::from).to_vec(), out: to_transform });

    while let Some(event) = events.next().await {
        if let Event::Message(msg) = event.kind {
            let Said::Total { records, fahrenheit } = msg.data;
            println!("{records} records, {fahrenheit:.2} °F in all");
            assert_eq!(records, 4);
            assert!((fahrenheit - 233.75).abs() < 1e-9);
            break;
        }
    }
    for worker in [&parse, &transform, &store] {
        worker.terminate();
    }
    for events in [&mut parse_events, &mut transform_events, &mut events] {
        while let Some(event) = events.next().await {
            if let Event::Exit(status) = event.kind {
                assert!(status.success(), "{status}");
            }
        }
    }
}
