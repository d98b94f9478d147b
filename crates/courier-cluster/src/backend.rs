//! The cluster as the [`Backend`] of a [`Client`](courier_core::Client).

use std::sync::Arc;

use courier_core::client::BoxFuture;
use courier_core::client::middleware::{
    PublishRequest, SubscribeRequest, Subscribed, UnsubscribeRequest,
};
use courier_core::{
    Backend, ClientInfo, ConnectionState, Event, PublishError, SubscribeError, UnsubscribeError,
};
use tokio::sync::{broadcast, watch};

use crate::cluster::Inner;

/// The connections of a cluster, behind a client.
pub(crate) struct ClusterBackend(pub(crate) Arc<Inner>);

impl Backend for ClusterBackend {
    fn publish(&self, request: PublishRequest) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(self.0.publish(request))
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Subscribed, SubscribeError>> {
        Box::pin(self.0.subscribe(request))
    }

    fn unsubscribe(
        &self,
        request: UnsubscribeRequest,
    ) -> BoxFuture<'_, Result<(), UnsubscribeError>> {
        Box::pin(self.0.unsubscribe(request))
    }

    fn release(&self, routes: &[u64]) -> Vec<String> {
        self.0.release(routes)
    }

    fn forget(&self, routes: &[u64]) {
        self.0.forget(routes);
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.0.stop())
    }

    fn abort(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.0.abort())
    }

    fn close(&self) {
        self.0.shutdown_now();
    }

    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.0.connection_state.subscribe()
    }

    fn events(&self) -> &broadcast::Sender<Event> {
        &self.0.events
    }

    fn info(&self) -> ClientInfo {
        self.0.info()
    }

    fn publishes_in_flight(&self) -> usize {
        self.0.publishes_in_flight()
    }

    fn address(&self) -> String {
        self.0.address()
    }
}
