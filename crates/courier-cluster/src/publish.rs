//! Publishing through a cluster: one connection chosen by the balance, another
//! when that one closes or goes down before the acknowledgement.

use std::sync::atomic::Ordering;

use courier_core::PublishError;
use courier_core::client::middleware::PublishRequest;
use tokio::time::Instant;

use crate::cluster::{Inner, deadline_after};
use crate::conn::Health;

impl Inner {
    /// Publish on a connection chosen by the [`Balance`](crate::Balance), resolving
    /// when its broker acknowledged the message. If that connection closes, is
    /// removed or goes down before the acknowledgement, the message is sent again
    /// on another connection (at least once: a broker that had taken it may deliver
    /// it twice), within the same timeout.
    ///
    /// Cancel safety: dropping the future before the message was queued on a
    /// connection sends nothing; after that, that connection still delivers it,
    /// only the acknowledgement is no longer awaited (and no re-send happens).
    pub(crate) async fn publish(&self, request: PublishRequest) -> Result<(), PublishError> {
        let timeout = request.timeout.unwrap_or_else(|| self.write_timeout());
        let deadline = deadline_after(Instant::now(), timeout);
        let mut tried: Vec<u64> = Vec::new();
        loop {
            let conn = self.pick(&tried, deadline, timeout).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(PublishError::Timeout(timeout));
            }
            let mut health = conn.meta.health.subscribe();
            let attempt = conn
                .client
                .publish(request.topic.clone(), request.payload.clone())
                .qos(request.qos)
                .retain(request.retain)
                .timeout(remaining);
            let outcome = tokio::select! {
                result = attempt => Some(result),
                _ = health.wait_for(|h| *h != Health::Up) => None,
            };
            match outcome {
                Some(Ok(())) => {
                    conn.meta.published.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Some(Err(
                    PublishError::Closed
                    | PublishError::StoppedInFlight
                    | PublishError::Aborted
                    | PublishError::ConnectionLost
                    | PublishError::SessionLost,
                )) => {
                    tracing::debug!(client_id = %conn.meta.client_id, "courier-cluster: connection closed under a publish; re-sending");
                    tried.push(conn.meta.id);
                }
                // The connection went down with the message unacknowledged: re-send
                // elsewhere (it may still arrive from there after a reconnect).
                None => {
                    tracing::debug!(client_id = %conn.meta.client_id, "courier-cluster: connection down under a publish; re-sending");
                }
                Some(Err(PublishError::Timeout(_))) => return Err(PublishError::Timeout(timeout)),
                Some(Err(e)) => return Err(e),
            }
        }
    }
}
