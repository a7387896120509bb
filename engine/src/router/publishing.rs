//! A publish under way: settled at once by the memory engine, or later,
//! from another thread, by a cluster engine's [`Sequencer`]. An HTTP
//! handler awaits it; a plugin's thread waits for it.
//!
//! [`Sequencer`]: super::log::Sequencer

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_channel::oneshot;

use super::coverage::Coverage;
use super::log::{Appended, Batch, LogError, Placed, Settle};
use super::stamped::Stamped;
use super::{PublishError, Stamp};
use crate::metrics::Metrics;

type Outcome = Result<Vec<Stamp>, PublishError>;

/// The outcome of [`super::Router::publish`], once it is known.
#[derive(Debug)]
pub struct Publishing(State);

#[derive(Debug)]
enum State {
    Ready(Option<Outcome>),
    Remote(oneshot::Receiver<Outcome>),
}

impl Publishing {
    pub(super) fn ready(outcome: Outcome) -> Publishing {
        Publishing(State::Ready(Some(outcome)))
    }

    /// A publish that `batch`'s sequencer settles: what it counts once the
    /// store has answered, and how it answers the publisher.
    pub(super) fn remote(
        batch: &Batch,
        metrics: Arc<Metrics>,
        coverage: Arc<Coverage>,
        stamped: Arc<Stamped>,
    ) -> (Publishing, Settle) {
        let (tx, rx) = oneshot::channel();
        let events: Vec<(Arc<str>, Arc<str>)> = batch
            .events
            .iter()
            .map(|e| (e.channel.clone(), e.type_name.clone()))
            .collect();
        let settle: Settle = Box::new(move |result: Result<Vec<Placed>, LogError>| {
            let outcome = match result {
                Ok(placed) => Ok(events
                    .iter()
                    .zip(placed)
                    .map(|((channel, type_name), placed)| {
                        if let Appended::New(sequence) = placed.appended {
                            // Counted on the node that took it, as the
                            // memory engine counts on stamping.
                            metrics.accept(type_name);
                            coverage.produced(type_name, 0);
                            stamped.record(channel, &placed.epoch, sequence);
                        }
                        Stamp {
                            channel: channel.clone(),
                            sequence: placed.appended.sequence(),
                            epoch: placed.epoch,
                        }
                    })
                    .collect()),
                Err(error) => {
                    let refused = PublishError::Unavailable {
                        accepted: Vec::new(),
                        error,
                    };
                    metrics.refuse(refused.reason());
                    Err(refused)
                }
            };
            let _ = tx.send(outcome);
        });
        (Publishing(State::Remote(rx)), settle)
    }

    /// Blocks the thread until the publish is settled: for plugin threads,
    /// never for an async task.
    pub fn wait(self) -> Outcome {
        futures_executor::block_on(self)
    }
}

impl Future for Publishing {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match &mut self.0 {
            State::Ready(outcome) => Poll::Ready(outcome.take().expect("polled after Ready")),
            State::Remote(rx) => Pin::new(rx).poll(cx).map(|settled| {
                settled.unwrap_or_else(|_| {
                    Err(PublishError::Unavailable {
                        accepted: Vec::new(),
                        error: LogError::Unavailable {
                            channel: String::new(),
                            reason: "the cluster engine stopped before it answered".into(),
                        },
                    })
                })
            }),
        }
    }
}
