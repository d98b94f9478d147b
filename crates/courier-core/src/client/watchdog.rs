//! The ack watchdog (`ClientBuilder::ack_timeout`): forces a reconnect when a sent
//! publish waits too long for its acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Shared;
use super::events::Event;

/// Checks four times per `timeout` until the client stops.
pub(crate) async fn run(shared: Arc<Shared>, timeout: Duration) {
    let period = (timeout / 4).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if !shared.state.borrow().is_connected() {
            continue;
        }
        let oldest = shared.outbound().oldest_unacknowledged();
        let waited = oldest.map(|since| Instant::now().into_std().saturating_duration_since(since));
        if let Some(waited) = waited.filter(|w| *w > timeout) {
            tracing::warn!(
                ?waited,
                "courier: acknowledgements stopped; forcing a reconnect"
            );
            shared.emit(Event::AckTimeout { waited });
            shared.force_reconnect.notify_one();
            // Give the reconnect time before judging again.
            let mut state = shared.state.subscribe();
            let _ = state.wait_for(|s| !s.is_connected()).await;
        }
    }
}
