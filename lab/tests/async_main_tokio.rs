//! `run_if_worker` on the first line of a `#[tokio::main]` async main. The
//! parent's actix System cannot run inside tokio's runtime: it gets a
//! thread of its own.

#[path = "../../tests/async_main/common.rs"]
mod common;

#[tokio::main]
async fn main() {
    actix_webworker::run_if_worker([common::entry()]);
    let parent = std::thread::spawn(|| actix::System::new().block_on(common::check()));
    parent.join().expect("the parent's System ran");
}
