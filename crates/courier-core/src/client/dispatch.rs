//! Runs handler subscriptions: takes messages from a subscription's queue, in
//! arrival order, and hands each to the handler on the subscription's own task, one
//! at a time or up to a chosen number at once.

use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::consumers::Consumers;
use super::handler::Handler;
use super::router::{Delivery, Source};
use super::{Client, Event};

/// Run a handler subscription until the client stops delivering (see
/// [`Consumers`]): up to `concurrency` messages at once, started in arrival
/// order. `client` is a handle that does not keep the client running. A message's
/// acknowledgement is released when its handler returns; the connection still sends
/// the acknowledgements in arrival order.
pub(crate) async fn run_handler<H: Handler>(
    client: Client,
    handler: H,
    mut source: Source,
    concurrency: NonZeroUsize,
) {
    let consumers = client.consumers().clone();
    if concurrency.get() == 1 {
        while let Some(delivery) = source.recv().await {
            if handle(&client, &handler, &consumers, delivery)
                .await
                .is_break()
            {
                return;
            }
        }
        return;
    }
    let mut running = FuturesUnordered::new();
    let mut taking = true;
    while taking || !running.is_empty() {
        tokio::select! {
            biased;
            Some(flow) = running.next(), if !running.is_empty() => {
                if let ControlFlow::Break(()) = flow {
                    taking = false;
                }
            }
            delivery = source.recv(), if taking && running.len() < concurrency.get() => {
                match delivery {
                    Some(delivery) => running.push(handle(&client, &handler, &consumers, delivery)),
                    None => taking = false,
                }
            }
        }
    }
}

/// Handle one message; `Break` when the client stops delivering (the message is
/// then left unacknowledged).
async fn handle<H: Handler>(
    client: &Client,
    handler: &H,
    consumers: &Consumers,
    delivery: Delivery,
) -> ControlFlow<()> {
    let Some(_busy) = consumers.enter() else {
        // Left unconsumed: delivered again in the next session.
        delivery.abandon();
        return ControlFlow::Break(());
    };
    let Delivery {
        message,
        ack,
        charge,
    } = delivery;
    // A clone (one reference count) keeps the topic for an error report.
    let topic_of = message.clone();
    let handled = AssertUnwindSafe(handler.handle(client.clone(), message)).catch_unwind();
    let outcome = tokio::select! {
        biased;
        outcome = handled => outcome,
        () = consumers.cancelled() => {
            tracing::warn!(
                client_id = %client.client_id(),
                topic = %topic_of.topic(),
                "courier: handler cancelled at the end of the graceful shutdown period; \
                 its message is not acknowledged"
            );
            if let Some(ack) = ack {
                ack.abandon();
            }
            return ControlFlow::Break(());
        }
    };
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("handler panicked".to_owned()),
    };
    if let Some(error) = error {
        let topic = topic_of.topic().to_owned();
        tracing::warn!(client_id = %client.client_id(), %topic, %error, "courier: message handler failed");
        client.emit(Event::HandlerFailed { topic, error });
    }
    if let Some(ack) = ack {
        ack.consume();
    }
    drop(charge);
    ControlFlow::Continue(())
}
