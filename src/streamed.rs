//! Requests answered by a stream of items: the vocabulary both sides
//! share. A [`StreamRequest`] is an actix message whose `Result` is
//! [`Streamed<Item>`](Streamed): the answering side's handler returns the
//! items as a stream, and the asker reads them one by one, typed, as a
//! `futures` stream (`AnswerStream`, in the session), with back-pressure
//! (a window of bytes the producer may send ahead), cancellation when the
//! reader drops it, and an end or an error as the last thing it reads.

use std::fmt::Display;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix::dev::{MessageResponse, OneshotSender};
use actix::{Actor, Message};
use futures_util::stream::{self, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A request whose answer is a stream of `Item`s: an actix [`Message`]
/// that is a serde type, with `Result = Streamed<Item>` and `Item` a
/// serde type. Implemented for every such type; declare one the actix way:
///
/// ```
/// use actix::Message;
/// use actix_webworker::Streamed;
/// use serde::{Deserialize, Serialize};
///
/// /// The rows of a file, parsed as they come.
/// #[derive(Message, Serialize, Deserialize)]
/// #[rtype(result = "Streamed<Vec<String>>")]
/// struct Rows { path: String }
/// ```
///
/// The worker's actor answers it with an ordinary `Handler<Rows>` whose
/// result is a [`Streamed`], registered with
/// [`Requests::stream`](crate::Requests::stream); the parent asks with
/// [`AskStream`](crate::AskStream) (or a [`Port`](crate::Port), or a
/// pool) and reads `Result<Vec<String>, WorkerError>` items with
/// `StreamExt::next()`. The other way, a worker asks with
/// [`Parent::ask_stream`](crate::Parent::ask_stream) and the parent
/// answers with [`WorkerBuilder::serve_stream`](crate::WorkerBuilder::serve_stream).
pub trait StreamRequest:
    Message<Result = Streamed<Self::Item>> + Serialize + DeserializeOwned + Send + 'static
{
    /// The type of each item: what the stream of the message's `Result`
    /// yields.
    type Item: Serialize + DeserializeOwned + Send + 'static;
}

impl<R, T> StreamRequest for R
where
    R: Message<Result = Streamed<T>> + Serialize + DeserializeOwned + Send + 'static,
    T: Serialize + DeserializeOwned + Send + 'static,
{
    type Item = T;
}

/// The answer to a [`StreamRequest`], as its handler returns it: the items,
/// produced one by one as the asker makes room for them. The producer is
/// polled only while the asker's window has room, and dropped as soon as
/// the asker stops reading (it dropped its stream, or went away): a
/// producer that holds resources frees them in its `Drop`.
///
/// ```
/// use actix_webworker::Streamed;
/// use futures_util::stream;
///
/// // From an iterator, a stream, or a stream of results whose first
/// // error ends the answer with that error.
/// let squares = Streamed::iter((1..=3u64).map(|n| n * n));
/// let hits = Streamed::new(stream::iter(vec!["a".to_owned(), "b".to_owned()]));
/// let parsed: Streamed<u32> = Streamed::fallible(stream::iter(vec![Ok(1), Err("bad row 2")]));
/// # let _ = (squares, hits, parsed);
/// ```
pub struct Streamed<T>(Pin<Box<dyn Stream<Item = Result<T, String>>>>);

impl<T: 'static> Streamed<T> {
    /// The items of `stream`, then the end.
    pub fn new(stream: impl Stream<Item = T> + 'static) -> Self {
        Streamed(Box::pin(stream.map(Ok)))
    }

    /// The items of `iter`, then the end.
    pub fn iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
    {
        Streamed::new(stream::iter(iter))
    }

    /// The `Ok` items of `stream`; its first `Err` ends the answer, and
    /// the asker reads it as
    /// [`WorkerError::StreamFailed`](crate::WorkerError::StreamFailed) with
    /// the error's text.
    pub fn fallible<E: Display>(stream: impl Stream<Item = Result<T, E>> + 'static) -> Self {
        Streamed(Box::pin(stream.map(|item| item.map_err(|e| e.to_string()))))
    }
}

impl<T> Stream for Streamed<T> {
    type Item = Result<T, String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

impl<T> std::fmt::Debug for Streamed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Streamed")
    }
}

/// A handler may return a `Streamed` to an ordinary `send` too: it is
/// handed over as it is.
impl<A: Actor, M: Message<Result = Streamed<T>>, T: 'static> MessageResponse<A, M> for Streamed<T> {
    fn handle(self, _: &mut A::Context, tx: Option<OneshotSender<Streamed<T>>>) {
        if let Some(tx) = tx {
            let _ = tx.send(self);
        }
    }
}
