//! [`Handler`]: the callback style of subscription (the Go `MessageHandler`).

use std::future::Future;

use super::Client;
use crate::error::BoxError;
use crate::message::Message;

/// Handles the messages of a subscription. Gets a [`Client`] handle so it can publish,
/// subscribe or unsubscribe from inside (the Go `PubSub`).
///
/// Any `Fn(Client, Message) -> impl Future<Output = R>` where `R` is `()` or a
/// `Result<(), E>` is a handler:
///
/// ```no_run
/// # async fn demo(client: courier_core::Client) -> Result<(), courier_core::SubscribeError> {
/// use courier_core::{Client, Message};
/// client
///     .subscribe("orders/+")
///     .handler(|client: Client, msg: Message| async move {
///         client.publish("audit", msg.payload().clone()).await
///     })
///     .await?;
/// # Ok(()) }
/// ```
///
/// Handlers of one subscription run one message at a time, in arrival order, on a task
/// of their own: a slow handler never stalls the connection (keep-alive, publishing,
/// other subscriptions' queued messages go on). Its QoS 1/2 messages are acknowledged
/// only once handled, and acknowledgements leave in arrival order, so while it is
/// behind, the broker's in-flight window (Mosquitto: 20 messages) fills and the broker
/// holds back further QoS 1/2 messages for this client until it catches up: nothing is
/// lost, and memory stays bounded.
pub trait Handler: Send + Sync + 'static {
    /// Handle one message. An error is logged, reported as
    /// [`Event::HandlerFailed`](super::Event::HandlerFailed), and the message is still
    /// acknowledged.
    fn handle(
        &self,
        client: Client,
        message: Message,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// The results a handler closure may return.
pub trait HandlerResult {
    /// Convert into the handler's result.
    ///
    /// # Errors
    ///
    /// The handler's own error.
    fn into_handler_result(self) -> Result<(), BoxError>;
}

impl HandlerResult for () {
    fn into_handler_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> HandlerResult for Result<(), E> {
    fn into_handler_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

impl<F, Fut> Handler for F
where
    F: Fn(Client, Message) -> Fut + Send + Sync + 'static,
    Fut: Future + Send,
    Fut::Output: HandlerResult,
{
    fn handle(
        &self,
        client: Client,
        message: Message,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let fut = self(client, message);
        async move { fut.await.into_handler_result() }
    }
}
