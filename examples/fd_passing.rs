//! A small prefork TCP echo server: descriptors travel with messages.
//!
//! The parent binds a listener on 127.0.0.1 (port 0), accepts connections and
//! hands each accepted socket to one of two workers with `Post::with_fds`;
//! the worker echoes on it and tells the parent how many bytes it served. The
//! example connects a few clients itself, checks the echoes, prints a
//! summary, and exits 0.
//!
//! Run it with `cargo run --example fd_passing`.

use std::os::fd::OwnedFd;

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, Entry, Event, Join, Parent, Post, Protocol, Received, Worker, WorkerActor,
    WorkerAddrExt, WorkerEvent,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Parent → worker: serve the connection sent along.
#[derive(Serialize, Deserialize, Debug)]
struct Serve {
    client: u32,
}

/// Worker → parent: done with a connection.
#[derive(Serialize, Deserialize, Debug)]
struct Served {
    client: u32,
    bytes: usize,
    worker_pid: u32,
}

struct Prefork;

impl Protocol for Prefork {
    type ToWorker = Serve;
    type FromWorker = Served;
}

// ---- the worker -----------------------------------------------------------

struct EchoWorker {
    parent: Parent<Prefork>,
}

impl Actor for EchoWorker {
    type Context = Context<Self>;
}

impl Handler<Received<Serve>> for EchoWorker {
    type Result = ();

    fn handle(&mut self, mut msg: Received<Serve>, _: &mut Context<Self>) {
        let Some(fd) = msg.take_fd() else {
            eprintln!("worker: a Serve without a socket");
            return;
        };
        let parent = self.parent.clone();
        let client = msg.data.client;
        actix_rt::spawn(async move {
            let bytes = echo(fd).await.unwrap_or(0);
            let _ = parent.post(Served { client, bytes, worker_pid: std::process::id() });
        });
    }
}

/// Echoes everything until the client closes its side.
async fn echo(fd: OwnedFd) -> std::io::Result<usize> {
    let std_stream = std::net::TcpStream::from(fd);
    std_stream.set_nonblocking(true)?;
    let mut stream = tokio::net::TcpStream::from_std(std_stream)?;
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        stream.write_all(&buf[..n]).await?;
        total += n;
    }
}

impl WorkerActor for EchoWorker {
    type Protocol = Prefork;
}

// ---- the parent -----------------------------------------------------------

/// Forwards worker events to the parent's main task.
struct Forward(mpsc::UnboundedSender<WorkerEvent<Prefork>>);

impl Actor for Forward {
    type Context = Context<Self>;
}

impl Handler<WorkerEvent<Prefork>> for Forward {
    type Result = ();

    fn handle(&mut self, event: WorkerEvent<Prefork>, _: &mut Context<Self>) {
        let _ = self.0.send(event);
    }
}

const CLIENTS: u32 = 6;

async fn client(addr: std::net::SocketAddr, n: u32) -> std::io::Result<bool> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let text = format!("hello from client {n}");
    stream.write_all(text.as_bytes()).await?;
    stream.shutdown().await?;
    let mut back = String::new();
    stream.read_to_string(&mut back).await?;
    Ok(back == text)
}

async fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let (tx, mut events) = mpsc::unbounded_channel();
    let forward = Forward(tx).start();
    let workers: Vec<_> = (0..2)
        .map(|i| {
            Worker::<Prefork>::builder()
                .entry("echo")
                .name(format!("echo-{i}"))
                .events(forward.clone().recipient())
                .start()
        })
        .collect::<Result<_, _>>()?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");

    // The clients run beside the accept loop.
    let clients = actix_rt::spawn(async move {
        let mut ok = 0;
        for n in 0..CLIENTS {
            if client(addr, n).await.unwrap_or(false) {
                ok += 1;
            }
        }
        ok
    });

    for n in 0..CLIENTS {
        let (stream, _) = listener.accept().await?;
        let fd: OwnedFd = stream.into_std()?.into();
        // Round robin over the two workers; the parent's copy of the socket
        // is closed once it has been sent.
        let worker = &workers[n as usize % workers.len()];
        worker.send(Post::with_fds(Serve { client: n }, vec![fd])).await??;
    }

    let mut served = 0;
    let mut bytes = 0;
    while served < CLIENTS {
        let Some(event) = events.recv().await else { break };
        match event.kind {
            Event::Message(msg) => {
                println!(
                    "client {} served by {} (pid {}): {} bytes",
                    msg.data.client, event.name, msg.data.worker_pid, msg.data.bytes
                );
                served += 1;
                bytes += msg.data.bytes;
            }
            Event::Exit(status) => {
                return Err(format!("{} exited early: {status}", event.name).into())
            }
            _ => {}
        }
    }
    let echoed = clients.await?;
    println!("summary: {echoed}/{CLIENTS} echoes correct, {served} connections, {bytes} bytes, 2 workers");

    for worker in &workers {
        worker.terminate();
    }
    for worker in &workers {
        let status = worker.send(Join).await?;
        if !status.success() {
            return Err(format!("a worker exited with {status}").into());
        }
    }
    if echoed != CLIENTS {
        return Err("some echoes were wrong".into());
    }
    Ok(())
}

fn main() {
    run_if_worker([Entry::new("echo", |parent| EchoWorker { parent })]);

    if let Err(e) = System::new().block_on(parent()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
