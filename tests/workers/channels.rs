//! Channels between workers (`MessageChannel`): ends posted to workers
//! inside ordinary messages, worker ↔ worker traffic with the parent out
//! of the data path, a closed or killed end told to the other with its
//! counts, a hostile peer on an end, and an end refused for a remote
//! worker.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{
    Channel, ChannelEnd, ChannelEvent, CloseReason, Entry, Event, MessageChannel, Parent, Protocol,
    Received, Worker, WorkerActor, WorkerAddrExt,
};
use libtest_mimic::Trial;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    let mut tests = crate::trials![
        channels::three_workers_pipeline_with_the_parent_out_of_the_data_path,
        channels::a_consumer_killed_mid_stream_is_told_to_the_producer_with_exact_counts,
        channels::a_worker_terminated_mid_stream_closes_its_ends_and_every_post_arrives,
        channels::a_worker_that_closes_itself_or_gets_sigterm_closes_its_ends_and_every_post_arrives,
        channels::a_restarted_worker_has_no_ends_and_a_new_channel_joins_it_again,
        channels::a_channel_is_a_second_line_between_the_parent_and_a_worker,
        channels::a_hostile_peer_on_an_end_is_a_typed_error_and_the_worker_lives_on,
        channels::a_python_worker_holds_an_end_and_echoes_on_it,
    ];
    tests.extend(crate::trials![channels::a_process_that_held_ends_holds_no_descriptor_after]);
    tests.extend(crate::with_feature!(
        "tcp",
        trials![channels::an_end_posted_to_a_remote_worker_is_refused]
    ));
    tests
}

/// Run only as a process of their own, by the tests above.
pub fn roles() -> Vec<Trial> {
    crate::inner![channels::ends_closed_or_gone_leave_no_descriptor_inner]
}

/// What flows on the tests' channels.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Item {
    pub n: u64,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// The item that ends a stream.
pub const END: u64 = u64::MAX;

/// Answered over a channel: twice the number.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Double(pub u64);

/// Asked over a channel, never answered.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Stall;

pub type End = ChannelEnd<Item, Item>;

/// Asked of a stage (through a pool too): open `end` as the line
/// [`Relay`] asks over.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Plug(pub End);

/// Asked of a stage: its answer is what the other end of its plugged
/// channel answers to `Double` of the number (`trace.rs`).
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Relay(pub u64);

/// What the parent tells a stage.
#[derive(Serialize, Deserialize, Debug)]
pub enum Job {
    /// Post `count` items of `size` bytes down `out`, then the end item;
    /// then close `out`, and say `Produced`.
    Produce { out: End, count: u64, size: usize },
    /// The same, to the parent, over the parent link.
    ProduceToParent { count: u64, size: usize },
    /// Post every item of `input` to `output`, its number doubled; close
    /// `output` when `input` closes.
    Transform { input: End, output: End },
    /// Count and add up the items of `input` (or, without, those the
    /// parent posts); at the end item say `Stored`; say `Count` every
    /// `every` items when `every > 0`.
    Store { input: Option<End>, every: u64 },
    /// An item from the parent, for a store without a channel.
    Item(Item),
    /// Post items down `out` until it refuses them.
    Flood { out: End },
    /// Send every item of `end` back on it; answer `Double` asked on it.
    Echo { end: End },
    Pid,
    /// Close from inside (`Parent::close`): `on_close` runs, then a clean
    /// exit.
    Close,
}

/// What a stage tells the parent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Said {
    Produced(u64),
    Stored { count: u64, sum: u64 },
    Count(u64),
    /// What a producer's end had accepted when it closed it, in `on_close`.
    Sent(u64),
    Item(Item),
    /// A channel of the stage closed: why (its Debug), and its account;
    /// `accepted` and `refused`: what its producing loop saw, if any.
    Closed { why: String, sent: u64, unsent: u64, in_doubt: u64, received: u64, accepted: u64 },
    /// A message of a channel did not decode.
    Error(String),
    Pid(u32),
}

pub struct Piped;

impl Protocol for Piped {
    type ToWorker = Job;
    type FromWorker = Said;
}

/// One stage of a pipeline (which one, its first job says).
pub struct Stage {
    parent: Parent<Piped>,
    output: Option<Channel<Item, Item>>,
    echo: Option<Channel<Item, Item>>,
    flood: Option<Channel<Item, Item>>,
    /// What `Relay` asks over.
    relay: Option<Channel<Item, Item>>,
    count: u64,
    sum: u64,
    every: u64,
    /// What a producing loop had accepted.
    accepted: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Actor for Stage {
    type Context = Context<Self>;
}

impl WorkerActor for Stage {
    type Protocol = Piped;

    fn on_close(&mut self, _: &mut Context<Self>) {
        // Closed here, its count is final: what the flood posts later is
        // refused.
        if let Some(out) = &self.flood {
            out.close();
            let _ = self.parent.post(Said::Sent(out.sent()));
        }
    }

    fn requests(requests: &mut actix_webworker::Requests<Self>) {
        requests.answer::<Plug>().answer::<Relay>();
    }
}

impl Handler<Plug> for Stage {
    type Result = ();

    fn handle(&mut self, Plug(end): Plug, ctx: &mut Context<Self>) {
        self.relay = Some(end.open(ctx.address()));
    }
}

impl Handler<Relay> for Stage {
    type Result = ResponseFuture<u64>;

    fn handle(&mut self, Relay(n): Relay, _: &mut Context<Self>) -> Self::Result {
        // Asked now, inside the handling's span.
        let asked = self.relay.as_ref().map(|relay| relay.ask(Double(n)));
        Box::pin(async move {
            match asked {
                Some(asked) => asked.await.unwrap_or(0),
                None => 0,
            }
        })
    }
}

pub fn entries() -> Vec<Entry> {
    vec![Entry::new("stage", |parent| Stage {
        parent,
        output: None,
        echo: None,
        flood: None,
        relay: None,
        count: 0,
        sum: 0,
        every: 0,
        accepted: Default::default(),
    })]
}

fn item(n: u64, size: usize) -> Item {
    Item { n, body: vec![(n % 251) as u8; size] }
}

impl Stage {
    fn store(&mut self, item: Item) {
        if item.n == END {
            let _ = self.parent.post(Said::Stored { count: self.count, sum: self.sum });
            return;
        }
        self.count += 1;
        self.sum += item.n;
        if self.every > 0 && self.count.is_multiple_of(self.every) {
            let _ = self.parent.post(Said::Count(self.count));
        }
    }
}

impl Handler<Received<Job>> for Stage {
    type Result = ();

    fn handle(&mut self, msg: Received<Job>, ctx: &mut Context<Self>) {
        match msg.data {
            Job::Produce { out, count, size } => {
                let out = out.open(ctx.address());
                let parent = self.parent.clone();
                actix_rt::spawn(async move {
                    for n in 0..count {
                        out.post_waiting(item(n, size)).await.expect("the channel takes it");
                    }
                    out.post_waiting(item(END, 0)).await.expect("the channel takes it");
                    out.close();
                    let _ = parent.post(Said::Produced(count));
                });
            }
            Job::ProduceToParent { count, size } => {
                for n in 0..count {
                    self.parent.post(Said::Item(item(n, size))).expect("the parent takes it");
                }
                self.parent.post(Said::Item(item(END, 0))).expect("the parent takes it");
                let _ = self.parent.post(Said::Produced(count));
            }
            Job::Transform { input, output } => {
                // Paced by what it reads; room for what the store is behind.
                let options = actix_webworker::ChannelOptions::default().max_queued(1 << 20);
                self.output = Some(output.opening(ctx.address()).options(options).open());
                input.open(ctx.address());
            }
            Job::Store { input, every } => {
                self.every = every;
                if let Some(input) = input {
                    input.open(ctx.address());
                }
            }
            Job::Item(item) => self.store(item),
            Job::Flood { out } => {
                let out = out.open(ctx.address());
                self.flood = Some(out.clone());
                let accepted = self.accepted.clone();
                actix_rt::spawn(async move {
                    let mut n = 0;
                    while out.post_waiting(item(n, 64)).await.is_ok() {
                        n += 1;
                        accepted.set(n);
                    }
                });
            }
            Job::Echo { end } => {
                let opening = end.opening(ctx.address()).answer::<Double>().answer::<Stall>();
                self.echo = Some(opening.open());
            }
            Job::Pid => {
                let _ = self.parent.post(Said::Pid(std::process::id()));
            }
            Job::Close => self.parent.close(),
        }
    }
}

impl Handler<Double> for Stage {
    type Result = u64;

    fn handle(&mut self, msg: Double, _: &mut Context<Self>) -> u64 {
        msg.0 * 2
    }
}

impl Handler<Stall> for Stage {
    type Result = ResponseFuture<u64>;

    fn handle(&mut self, _: Stall, _: &mut Context<Self>) -> ResponseFuture<u64> {
        Box::pin(std::future::pending())
    }
}

impl Handler<ChannelEvent<Item>> for Stage {
    type Result = ();

    fn handle(&mut self, event: ChannelEvent<Item>, _: &mut Context<Self>) {
        match event {
            ChannelEvent::Message(msg) => {
                let item = msg.data;
                if let Some(echo) = &self.echo {
                    let _ = echo.post(item);
                } else if let Some(output) = &self.output {
                    let n = if item.n == END { END } else { item.n * 2 };
                    output.post(Item { n, body: item.body }).expect("room for the store");
                } else {
                    self.store(item);
                }
            }
            ChannelEvent::Error(e) => {
                let _ = self.parent.post(Said::Error(e.to_string()));
            }
            ChannelEvent::Closed(closed) => {
                // The input of a transform closed: so does its output.
                if let (Some(output), CloseReason::PeerClosed) = (&self.output, &closed.why) {
                    output.close();
                }
                let _ = self.parent.post(Said::Closed {
                    why: format!("{:?}", closed.why),
                    sent: closed.sent,
                    unsent: closed.unsent,
                    in_doubt: closed.in_doubt,
                    received: closed.received,
                    accepted: self.accepted.get(),
                });
            }
            _ => {}
        }
    }
}

/// A stage, started, with its events.
fn stage() -> (Addr<Worker<Piped>>, Events<Piped>) {
    let (events, rx) = events::<Piped>();
    let worker = Worker::<Piped>::builder()
        .entry("stage")
        .restart(actix_webworker::RestartPolicy::never())
        .events(events)
        .start()
        .unwrap();
    (worker, rx)
}

/// The CPU time this thread has used (the parent's actix system runs
/// on it: every link, every event), in microseconds.
fn thread_cpu_us() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for the call to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0);
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// The next message of `events` that `pick` takes, skipping others.
async fn said<T>(events: &mut Events<Piped>, mut pick: impl FnMut(&Said) -> Option<T>) -> T {
    loop {
        let msg = events.message().await;
        if let Some(found) = pick(&msg.data) {
            return found;
        }
    }
}

/// The pid of `stage`'s process, as it says when asked (an answer also
/// says that its parent link goes on).
async fn pid_of(stage: &Addr<Worker<Piped>>, events: &mut Events<Piped>) -> u32 {
    stage.post(Job::Pid);
    said(events, |s| match s {
        Said::Pid(pid) => Some(*pid),
        _ => None,
    })
    .await
}

const ITEMS: u64 = 200_000;

pub fn three_workers_pipeline_with_the_parent_out_of_the_data_path() {
    run(async {
        let (parse, mut parse_events) = stage();
        let (transform, mut transform_events) = stage();
        let (store, mut store_events) = stage();
        for w in [&parse, &transform, &store] {
            w.post(Job::Pid);
        }
        for e in [&mut parse_events, &mut transform_events, &mut store_events] {
            said(e, |s| matches!(s, Said::Pid(_)).then_some(())).await;
        }

        // Over channels: parse -> transform -> store.
        let before = thread_cpu_us();
        let (to_transform, from_parse) = MessageChannel::<Item, Item>::new().unwrap();
        let (to_store, from_transform) = MessageChannel::<Item, Item>::new().unwrap();
        store.post(Job::Store { input: Some(from_transform), every: 0 });
        transform.post(Job::Transform { input: from_parse, output: to_store });
        parse.post(Job::Produce { out: to_transform, count: ITEMS, size: 64 });
        let (count, sum) = said(&mut store_events, |s| match s {
            Said::Stored { count, sum } => Some((*count, *sum)),
            _ => None,
        })
        .await;
        let over_channels = thread_cpu_us() - before;
        assert_eq!(count, ITEMS);
        assert_eq!(sum, (0..ITEMS).map(|n| n * 2).sum::<u64>(), "every item, transformed");
        // The close travels down the pipeline, with its counts.
        let closed = said(&mut store_events, |s| match s {
            Said::Closed { why, received, .. } => Some((why.clone(), *received)),
            _ => None,
        })
        .await;
        assert_eq!(closed, ("PeerClosed".to_owned(), ITEMS + 1), "every item, and the end");
        let produced = said(&mut parse_events, |s| match s {
            Said::Closed { why, sent, unsent, in_doubt, .. } => {
                Some((why.clone(), *sent, *unsent, *in_doubt))
            }
            _ => None,
        })
        .await;
        assert_eq!(produced, ("Closed".to_owned(), ITEMS + 1, 0, 0));

        // The same data through the parent: parse -> parent -> store.
        let (store2, mut store2_events) = stage();
        store2.post(Job::Store { input: None, every: 0 });
        let before = thread_cpu_us();
        parse.post(Job::ProduceToParent { count: ITEMS, size: 64 });
        loop {
            if let Said::Item(item) = parse_events.message().await.data {
                let end = item.n == END;
                store2.post(Job::Item(item));
                if end {
                    break;
                }
            }
        }
        let (count, _) = said(&mut store2_events, |s| match s {
            Said::Stored { count, sum } => Some((*count, *sum)),
            _ => None,
        })
        .await;
        let through_parent = thread_cpu_us() - before;
        assert_eq!(count, ITEMS);
        println!(
            "parent CPU for {ITEMS} items of 64 B: over channels {over_channels} us, through the \
             parent {through_parent} us ({:.1} %)",
            100.0 * over_channels as f64 / through_parent as f64
        );
        assert!(
            over_channels * 10 < through_parent,
            "the parent worked {over_channels} us over channels, {through_parent} us relaying"
        );
        for w in [&parse, &transform, &store, &store2] {
            w.terminate();
        }
        for e in [&mut parse_events, &mut transform_events, &mut store_events, &mut store2_events] {
            assert!(e.exit().await.success());
        }
    });
}

pub fn a_consumer_killed_mid_stream_is_told_to_the_producer_with_exact_counts() {
    run(async {
        let (producer, mut producer_events) = stage();
        let (consumer, mut consumer_events) = stage();
        let pid = pid_of(&consumer, &mut consumer_events).await;
        let (out, input) = MessageChannel::<Item, Item>::new().unwrap();
        consumer.post(Job::Store { input: Some(input), every: 1000 });
        producer.post(Job::Flood { out });
        // Mid-stream: the consumer has taken some.
        let mut seen = said(&mut consumer_events, |s| match s {
            Said::Count(n) if *n >= 20_000 => Some(*n),
            _ => None,
        })
        .await;
        assert!(kill(pid, Signal::SIGKILL));
        // What the consumer said before it died.
        while let Event::Message(msg) = consumer_events.next().await {
            if let Said::Count(n) = msg.data {
                seen = n;
            }
        }
        let (why, sent, unsent, in_doubt, accepted) = said(&mut producer_events, |s| match s {
            Said::Closed { why, sent, unsent, in_doubt, accepted, .. } => {
                Some((why.clone(), *sent, *unsent, *in_doubt, *accepted))
            }
            _ => None,
        })
        .await;
        println!(
            "sent {sent}: unsent {unsent}, in doubt {in_doubt}; the consumer said it took {seen}"
        );
        assert_eq!(why, "PeerGone", "the producer is told the consumer went");
        assert_eq!(sent, accepted, "every post the channel accepted is in its account");
        assert!(unsent + in_doubt <= sent);
        let delivered = sent - unsent - in_doubt;
        assert!(
            seen <= delivered + in_doubt,
            "the consumer took {seen}, more than the {delivered} read and {in_doubt} in doubt"
        );
        assert!(delivered >= seen.saturating_sub(in_doubt));
        // The producer lives on, and its later posts are refused (its loop ended).
        pid_of(&producer, &mut producer_events).await;
        producer.terminate();
        assert!(producer_events.exit().await.success());
    });
}

pub fn a_worker_terminated_mid_stream_closes_its_ends_and_every_post_arrives() {
    run(async {
        let (producer, mut producer_events) = stage();
        let (consumer, mut consumer_events) = stage();
        let (out, input) = MessageChannel::<Item, Item>::new().unwrap();
        consumer.post(Job::Store { input: Some(input), every: 1000 });
        producer.post(Job::Flood { out });
        said(&mut consumer_events, |s| matches!(s, Said::Count(n) if *n >= 5000).then_some(()))
            .await;
        producer.terminate();
        let sent = said(&mut producer_events, |s| match s {
            Said::Sent(n) => Some(*n),
            _ => None,
        })
        .await;
        assert!(producer_events.exit().await.success());
        // Everything its end accepted, and then its close: not its death.
        let (why, received) = said(&mut consumer_events, |s| match s {
            Said::Closed { why, received, .. } => Some((why.clone(), *received)),
            _ => None,
        })
        .await;
        println!("the producer's end accepted {sent}; the consumer took {received}, then {why}");
        assert_eq!((why.as_str(), received), ("PeerClosed", sent));
        // An end left open by a worker that ends (no close of its own):
        // the runtime closes it after `on_close`, and the other end is
        // told it closed.
        let (mine, theirs) = MessageChannel::<Item, Item>::new().unwrap();
        consumer.post(Job::Echo { end: theirs });
        let (collect, mut rx) = collector();
        let line = mine.open(collect);
        line.post(item(7, 8)).unwrap();
        assert!(matches!(next_event(&mut rx).await, ChannelEvent::Message(m) if m.data.n == 7));
        consumer.terminate();
        match next_event(&mut rx).await {
            ChannelEvent::Closed(closed) => {
                assert_eq!(closed.why, CloseReason::PeerClosed);
                assert_eq!((closed.sent, closed.delivered(), closed.received), (1, 1, 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(consumer_events.exit().await.success());
    });
}

/// docs/channels.md: "A worker that ends (terminated, closing itself, its
/// parent gone, SIGTERM) closes the ends it still holds after its
/// `on_close` ... the other ends are told `PeerClosed`". A producer
/// mid-stream that closes itself (`Parent::close`), then one SIGTERMed
/// from outside: the consumer takes every post its end accepted, then
/// `PeerClosed`; an end it left open (to the parent) is closed for it.
pub fn a_worker_that_closes_itself_or_gets_sigterm_closes_its_ends_and_every_post_arrives() {
    run(async {
        for sigterm in [false, true] {
            let way = if sigterm { "SIGTERM" } else { "close()" };
            let (producer, mut producer_events) = stage();
            let (consumer, mut consumer_events) = stage();
            let pid = pid_of(&producer, &mut producer_events).await;
            // An end the producer leaves open: to the parent.
            let (mine, theirs) = MessageChannel::<Item, Item>::new().unwrap();
            producer.post(Job::Echo { end: theirs });
            let (collect, mut rx) = collector();
            let line = mine.open(collect);
            line.post(item(7, 8)).unwrap();
            assert!(matches!(next_event(&mut rx).await, ChannelEvent::Message(m) if m.data.n == 7));
            // The stream, to the consumer.
            let (out, input) = MessageChannel::<Item, Item>::new().unwrap();
            consumer.post(Job::Store { input: Some(input), every: 1000 });
            producer.post(Job::Flood { out });
            said(&mut consumer_events, |s| matches!(s, Said::Count(n) if *n >= 5000).then_some(()))
                .await;
            if sigterm {
                assert!(kill(pid, Signal::SIGTERM));
            } else {
                producer.post(Job::Close);
            }
            let sent = said(&mut producer_events, |s| match s {
                Said::Sent(n) => Some(*n),
                _ => None,
            })
            .await;
            let status = producer_events.exit().await;
            if sigterm {
                assert_eq!(status.code, Some(actix_webworker::exit_code::SIGTERM), "{status}");
            } else {
                assert!(status.success(), "{status}");
            }
            let (why, received) = said(&mut consumer_events, |s| match s {
                Said::Closed { why, received, .. } => Some((why.clone(), *received)),
                _ => None,
            })
            .await;
            println!("{way}: the producer's end accepted {sent}; the consumer took {received}, then {why}");
            assert_eq!((why.as_str(), received), ("PeerClosed", sent), "{way}");
            match next_event(&mut rx).await {
                ChannelEvent::Closed(closed) => {
                    assert_eq!(closed.why, CloseReason::PeerClosed, "{way}: the parent's end");
                    assert_eq!((closed.sent, closed.delivered(), closed.received), (1, 1, 1));
                }
                other => panic!("{way}: {other:?}"),
            }
            consumer.terminate();
            assert!(consumer_events.exit().await.success());
        }
    });
}

pub fn a_restarted_worker_has_no_ends_and_a_new_channel_joins_it_again() {
    run(async {
        let (producer, mut producer_events) = stage();
        let (events, mut consumer_events) = events::<Piped>();
        let consumer = Worker::<Piped>::builder()
            .entry("stage")
            .restart(fast(actix_webworker::Restart::OnFailure))
            .events(events)
            .start()
            .unwrap();
        let pid = pid_of(&consumer, &mut consumer_events).await;
        let (out, input) = MessageChannel::<Item, Item>::new().unwrap();
        consumer.post(Job::Store { input: Some(input), every: 1000 });
        producer.post(Job::Flood { out });
        said(&mut consumer_events, |s| matches!(s, Said::Count(_)).then_some(())).await;
        assert!(kill(pid, Signal::SIGKILL));
        // The producer is told; the worker comes back, with no end.
        let why = said(&mut producer_events, |s| match s {
            Said::Closed { why, .. } => Some(why.clone()),
            _ => None,
        })
        .await;
        assert_eq!(why, "PeerGone");
        loop {
            match consumer_events.next().await {
                Event::Online => break,
                Event::Exit(status) => assert_eq!(status.signal, Some(9)),
                _ => {}
            }
        }
        // A new channel, to the same address: the new process takes it.
        let (out, input) = MessageChannel::<Item, Item>::new().unwrap();
        consumer.post(Job::Store { input: Some(input), every: 1000 });
        producer.post(Job::Flood { out });
        said(&mut consumer_events, |s| matches!(s, Said::Count(n) if *n >= 1000).then_some(()))
            .await;
        let again = pid_of(&consumer, &mut consumer_events).await;
        assert_ne!(again, pid, "another process");
        for w in [&producer, &consumer] {
            w.terminate();
        }
        assert!(producer_events.exit().await.success());
        assert!(consumer_events.exit().await.success());
    });
}

/// Forwards what an end of the parent's receives.
struct Collect(UnboundedSender<ChannelEvent<Item>>);

impl Actor for Collect {
    type Context = Context<Self>;
}

impl Handler<ChannelEvent<Item>> for Collect {
    type Result = ();

    fn handle(&mut self, event: ChannelEvent<Item>, _: &mut Context<Self>) {
        let _ = self.0.send(event);
    }
}

fn collector() -> (Addr<Collect>, UnboundedReceiver<ChannelEvent<Item>>) {
    let (tx, rx) = unbounded_channel();
    (Collect(tx).start(), rx)
}

async fn next_event(rx: &mut UnboundedReceiver<ChannelEvent<Item>>) -> ChannelEvent<Item> {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("an event in time").expect("an event")
}

pub fn a_channel_is_a_second_line_between_the_parent_and_a_worker() {
    run(async {
        let (worker, mut events) = stage();
        let (mine, theirs) = MessageChannel::<Item, Item>::new().unwrap();
        worker.post(Job::Echo { end: theirs });
        let (collect, mut rx) = collector();
        let line = mine.open(collect);
        for n in 0..1000 {
            line.post(item(n, 16)).unwrap();
        }
        // The parent link goes on beside it.
        pid_of(&worker, &mut events).await;
        for n in 0..1000 {
            match next_event(&mut rx).await {
                ChannelEvent::Message(msg) => assert_eq!(msg.data.n, n, "in order"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(line.ask(Double(21)).await, Ok(42));
        // docs/channels.md: `ask_timeout` gives up at its limit, and the
        // channel goes on.
        let limit = Duration::from_millis(100);
        let stalled = line.ask_timeout(Stall, limit).await;
        assert_eq!(stalled, Err(actix_webworker::WorkerError::Timeout(limit)));
        assert_eq!(line.ask_timeout(Double(4), WAIT).await, Ok(8));
        line.close();
        match next_event(&mut rx).await {
            ChannelEvent::Closed(closed) => {
                assert_eq!(closed.why, CloseReason::Closed);
                assert_eq!((closed.sent, closed.received, closed.delivered()), (1000, 1000, 1000));
            }
            other => panic!("{other:?}"),
        }
        let (why, received) = said(&mut events, |s| match s {
            Said::Closed { why, received, .. } => Some((why.clone(), *received)),
            _ => None,
        })
        .await;
        assert_eq!((why.as_str(), received), ("PeerClosed", 1000));
        assert!(line.post(item(0, 1)).is_err(), "a closed end takes nothing");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// A hello for an end, written by hand (`PROTOCOL.md`, "Handshake").
fn hello(fingerprint: u64) -> Vec<u8> {
    let mut msg = vec![1, 0];
    msg.extend_from_slice(b"AWW\x01");
    msg.extend_from_slice(&documented_version().to_le_bytes());
    msg.extend_from_slice(&fingerprint.to_le_bytes());
    msg.extend_from_slice(&std::process::id().to_le_bytes());
    msg.extend_from_slice(&[0, 0]);
    ws_frame(2, &msg)
}

pub fn a_hostile_peer_on_an_end_is_a_typed_error_and_the_worker_lives_on() {
    run(async {
        let (worker, mut events) = stage();
        // Garbage for a hello.
        let (mine, theirs) = MessageChannel::<Item, Item>::new().unwrap();
        worker.post(Job::Echo { end: theirs });
        let (fd, _, first) = mine.into_socket().unwrap();
        assert!(first, "the parent's end speaks first");
        let mut sock = UnixStream::from(fd);
        sock.write_all(&[0x82, 4, 0xde, 0xad, 0xbe, 0xef]).unwrap();
        let why = said(&mut events, |s| match s {
            Said::Closed { why, .. } => Some(why.clone()),
            _ => None,
        })
        .await;
        assert!(why.starts_with("Refused("), "{why}");
        drop(sock);

        // A good hello, then a frame that claims a gigabyte, then more.
        let (mine, theirs) = MessageChannel::<Item, Item>::new().unwrap();
        worker.post(Job::Echo { end: theirs });
        let (fd, fingerprint, _) = mine.into_socket().unwrap();
        let mut sock = UnixStream::from(fd);
        sock.write_all(&hello(fingerprint)).unwrap();
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 30).to_be_bytes());
        sock.write_all(&huge).unwrap();
        let _ = sock.write_all(&[0; 4096]);
        let why = said(&mut events, |s| match s {
            Said::Closed { why, .. } => Some(why.clone()),
            _ => None,
        })
        .await;
        assert!(why.starts_with("Broken(TooLarge"), "{why}");

        // A message that does not decode: told, and the channel goes on.
        let (mine, theirs) = MessageChannel::<Item, Item>::new().unwrap();
        worker.post(Job::Echo { end: theirs });
        let (fd, fingerprint, _) = mine.into_socket().unwrap();
        let mut sock = UnixStream::from(fd);
        sock.write_all(&hello(fingerprint)).unwrap();
        sock.write_all(&ws_frame(2, &[2, 0, 0xff, 0xff, 0xff])).unwrap();
        let error = said(&mut events, |s| match s {
            Said::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await;
        assert!(error.starts_with("undecodable message"), "{error}");

        // The worker lives on, and so does the parent link.
        pid_of(&worker, &mut events).await;
        drop(sock);
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

#[cfg(feature = "tcp")]
pub fn an_end_posted_to_a_remote_worker_is_refused() {
    use actix_webworker::{Post, WorkerError};
    run(async {
        let (events, mut rx) = events::<Piped>();
        let worker = Worker::<Piped>::builder()
            .entry("stage")
            .restart(actix_webworker::RestartPolicy::never())
            .transport(loopback())
            .events(events)
            .start()
            .unwrap();
        rx.online().await;
        let (mine, theirs) = MessageChannel::<Item, Item>::new().unwrap();
        let (collect, mut ends) = collector();
        let mine = mine.open(collect);
        let refused = worker.send(Post::new(Job::Echo { end: theirs })).await.unwrap();
        assert_eq!(refused, Err(WorkerError::NoDescriptors));
        // Its events say so too.
        match rx.next().await {
            Event::Refused(WorkerError::NoDescriptors) => {}
            other => panic!("{other:?}"),
        }
        // The other end went with the refused post: this one is told
        // (docs/channels.md), and takes no more posts.
        match next_event(&mut ends).await {
            ChannelEvent::Closed(closed) => {
                assert_eq!(closed.why, CloseReason::PeerGone, "{closed:?}");
                assert_eq!((closed.sent, closed.received), (0, 0));
            }
            other => panic!("{other:?}"),
        }
        let late = Item { n: 1, body: Vec::new() };
        assert_eq!(mine.post(late), Err(WorkerError::Disconnected));
        pid_of(&worker, &mut rx).await;
        worker.terminate();
        assert!(rx.exit().await.success());
    });
}

pub fn a_python_worker_holds_an_end_and_echoes_on_it() {
    if !crate::conformance::have_python() {
        return;
    }
    run(async {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/python");
        let (events, mut rx) = events::<Piped>();
        let worker = Worker::<Piped>::builder()
            .program("python3")
            .args([format!("{dir}/examples/channel_echo.py")])
            .env("PYTHONPATH", dir)
            .codec(actix_webworker::Codec::Json)
            .restart(actix_webworker::RestartPolicy::never())
            .events(events)
            .start()
            .unwrap();
        let (mine, theirs) = MessageChannel::<Item, Item>::new().unwrap();
        worker.post(Job::Echo { end: theirs });
        let (collect, mut got) = collector();
        let json = actix_webworker::ChannelOptions::default().codec(actix_webworker::Codec::Json);
        let line = mine.opening(collect).options(json).open();
        for n in 0..500 {
            line.post(item(n, 8)).unwrap();
        }
        for n in 0..500 {
            match next_event(&mut got).await {
                ChannelEvent::Message(msg) => assert_eq!(msg.data, item(n, 8), "in order"),
                other => panic!("{other:?}"),
            }
        }
        line.close();
        match next_event(&mut got).await {
            ChannelEvent::Closed(closed) => {
                assert_eq!(closed.why, CloseReason::Closed);
                assert_eq!((closed.sent, closed.received, closed.in_doubt), (500, 500, 0));
            }
            other => panic!("{other:?}"),
        }
        let (why, received) = said(&mut rx, |s| match s {
            Said::Closed { why, received, .. } => Some((why.clone(), *received)),
            _ => None,
        })
        .await;
        assert_eq!((why.as_str(), received), ("PeerClosed", 500));
        worker.terminate();
        assert!(rx.exit().await.success());
    });
}

pub fn a_process_that_held_ends_holds_no_descriptor_after() {
    isolated("channels::ends_closed_or_gone_leave_no_descriptor_inner");
}

/// The parent holds an end whose channel closes, then one whose worker is
/// killed; its descriptors come back to where they were each time.
pub fn ends_closed_or_gone_leave_no_descriptor_inner() {
    run(async {
        let (worker, mut events) = stage();
        let pid = pid_of(&worker, &mut events).await;
        let start = open_fds();
        for round in 0..2 {
            let (mine, theirs) = MessageChannel::<Item, Item>::new().unwrap();
            worker.post(Job::Echo { end: theirs });
            let (collect, mut rx) = collector();
            let line = mine.open(collect);
            line.post(item(1, 8)).unwrap();
            assert!(matches!(next_event(&mut rx).await, ChannelEvent::Message(_)));
            if round == 0 {
                line.close();
            } else {
                assert!(kill(pid, Signal::SIGKILL));
            }
            let ChannelEvent::Closed(closed) = next_event(&mut rx).await else { panic!() };
            let expected = if round == 0 { CloseReason::Closed } else { CloseReason::PeerGone };
            assert_eq!(closed.why, expected);
            drop(line);
            assert!(
                within(Duration::from_secs(5), || open_fds() <= start).await,
                "round {round}: {start} descriptors before, {} after",
                open_fds()
            );
        }
        assert!(events.exit().await.signal.is_some());
        drop(worker);
    });
}
