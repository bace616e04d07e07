//! `channel_stream_small`: 64-byte posts from one worker to another over a
//! `MessageChannel`, the parent out of the data path (msg/s), and the
//! parent's CPU meanwhile (its whole process: user and system time over
//! the wall time, in % of one core). Shared by the throughput probe
//! (`examples/throughput.rs`) and the criterion bench
//! (`benches/throughput.rs`).

use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_webworker::{
    Channel, ChannelEnd, ChannelEvent, Entry, Event, MessageChannel, Parent, Protocol, Received,
    Worker, WorkerActor, WorkerAddrExt, WorkerEvents,
};
use serde::{Deserialize, Serialize};

/// What goes over the channel.
#[derive(Serialize, Deserialize)]
pub enum Item {
    Small(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The end of a run: the consumer says how many it took.
    Last,
}

/// What the parent tells the two workers.
#[derive(Serialize, Deserialize)]
pub enum Job {
    /// Keep this end to post on.
    Producer(ChannelEnd<Item, ()>),
    /// Post `n` items of `size` bytes, then `Last`.
    Produce { n: u64, size: usize },
    /// Take items from this end; at each `Last`, say how many came.
    Consumer(ChannelEnd<(), Item>),
}

pub struct Piped;

impl Protocol for Piped {
    type ToWorker = Job;
    /// How many items came before a `Last`.
    type FromWorker = u64;
}

pub struct Stage {
    parent: Parent<Piped>,
    out: Option<Channel<Item, ()>>,
    taken: u64,
}

impl Actor for Stage {
    type Context = Context<Self>;
}

impl WorkerActor for Stage {
    type Protocol = Piped;
}

/// The workers' entry.
pub fn entry() -> Entry {
    Entry::new("channel-stage", |parent| Stage { parent, out: None, taken: 0 })
}

impl Handler<Received<Job>> for Stage {
    type Result = ();

    fn handle(&mut self, msg: Received<Job>, ctx: &mut Context<Self>) {
        match msg.data {
            Job::Producer(end) => self.out = Some(end.open(ctx.address())),
            Job::Consumer(end) => {
                end.open(ctx.address());
            }
            Job::Produce { n, size } => {
                let Some(out) = self.out.clone() else { return };
                let payload = vec![7u8; size];
                actix::spawn(async move {
                    for _ in 0..n {
                        // Queued at once while there is room; else it waits.
                        if let Err(actix_webworker::WorkerError::QueueFull { .. }) =
                            out.post(Item::Small(payload.clone()))
                        {
                            out.post_waiting(Item::Small(payload.clone())).await.expect("open");
                        }
                    }
                    out.post_waiting(Item::Last).await.expect("open");
                });
            }
        }
    }
}

impl Handler<ChannelEvent<()>> for Stage {
    type Result = ();

    fn handle(&mut self, _: ChannelEvent<()>, _: &mut Context<Self>) {}
}

impl Handler<ChannelEvent<Item>> for Stage {
    type Result = ();

    fn handle(&mut self, event: ChannelEvent<Item>, _: &mut Context<Self>) {
        if let ChannelEvent::Message(msg) = event {
            match msg.data {
                Item::Small(b) => {
                    std::hint::black_box(b);
                    self.taken += 1;
                }
                Item::Last => {
                    let _ = self.parent.post(std::mem::take(&mut self.taken));
                }
            }
        }
    }
}

/// Two workers joined by a channel: a producer and a consumer.
pub struct Pair {
    producer: Addr<Worker<Piped>>,
    consumer: Addr<Worker<Piped>>,
    events: WorkerEvents<Piped>,
}

impl Pair {
    pub async fn start() -> Pair {
        let start = || Worker::<Piped>::builder().entry("channel-stage");
        let producer = start().start().expect("producer starts");
        let (consumer, events) = start().start_with_events().expect("consumer starts");
        let (out, input) = MessageChannel::<Item, ()>::new().expect("a socketpair");
        consumer.post(Job::Consumer(input));
        producer.post(Job::Producer(out));
        let mut pair = Pair { producer, consumer, events };
        // Warm: the channel is open and has carried a run.
        pair.run(1000, 64).await;
        pair
    }

    /// `n` items of `size` bytes, producer to consumer: how long, from the
    /// parent's word to the consumer's.
    pub async fn run(&mut self, n: u64, size: usize) -> Duration {
        let t0 = Instant::now();
        self.producer.post(Job::Produce { n, size });
        loop {
            let event = self.events.next().await.expect("the consumer's events");
            match event.kind {
                Event::Message(msg) => {
                    assert_eq!(msg.data, n, "every item came");
                    return t0.elapsed();
                }
                Event::Exit(status) => panic!("the consumer exited: {status}"),
                _ => {}
            }
        }
    }

    pub async fn stop(self) {
        for worker in [&self.producer, &self.consumer] {
            worker.terminate();
            let _ = worker.send(actix_webworker::Join).await;
        }
    }
}

/// This process's CPU time so far (user and system, every thread).
pub fn process_cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for the call to fill.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |v: libc::timeval| Duration::new(v.tv_sec as u64, v.tv_usec as u32 * 1000);
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// `n` 64-byte items worker to worker: msg/s, and the parent's CPU
/// meanwhile in % of one core.
pub async fn channel_stream_small(n: u64) -> (f64, f64) {
    let mut pair = Pair::start().await;
    let cpu = process_cpu();
    let took = pair.run(n, 64).await;
    let parent = process_cpu() - cpu;
    pair.stop().await;
    (n as f64 / took.as_secs_f64(), 100.0 * parent.as_secs_f64() / took.as_secs_f64())
}
