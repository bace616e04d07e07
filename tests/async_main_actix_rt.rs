//! `run_if_worker` on the first line of an `#[actix_rt::main]` async main.

#[path = "async_main/alone.rs"]
mod alone;
#[path = "async_main/common.rs"]
mod common;

#[actix_rt::main]
async fn main() {
    actix_webworker::run_if_worker([common::entry()]);
    alone::assert_one_thread();
    common::check().await;
    alone::assert_grown_before_the_spawner();
}
