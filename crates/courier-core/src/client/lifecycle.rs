//! Starting and stopping: builds the request queue and connection engine from the
//! options, spawns the driver task, and stops it gracefully.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, oneshot, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use super::driver::Driver;
use super::engine::Engine;
use super::events::{ConnectionState, EVENT_BUFFER};
use super::inbound::Inbound;
use super::middleware::{BoxPublisher, BoxStopper, BoxSubscriber, BoxUnsubscriber, Stopper, apply};
use super::options::ValidOptions;
use super::outbound::Outbound;
use super::publish::ClientPublisher;
use super::requests::RequestQueue;
use super::router::Router;
use super::subscription::{ClientSubscriber, ClientUnsubscriber};
use super::{Chains, Client, Shared};
use crate::error::{ConfigError, ConnectError};

pub(crate) async fn connect(opts: ValidOptions) -> Result<Client, ConnectError> {
    let (client, first) = spawn(opts, true);
    match first.await {
        Ok(Ok(())) => Ok(client),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnectError::Closed),
    }
}

pub(crate) fn start(opts: ValidOptions) -> Result<Client, ConfigError> {
    let (client, _first) = spawn(opts, false);
    Ok(client)
}

fn spawn(
    opts: ValidOptions,
    fail_fast: bool,
) -> (Client, oneshot::Receiver<Result<(), ConnectError>>) {
    let b = &opts.builder;
    // Unbounded: courier bounds what goes in with its own windows.
    let requests = Arc::new(RequestQueue::default());
    // Packet ids cycle through twice the window so a slow acknowledgement rarely
    // collides with a new publish.
    let pkid_range = b.max_inflight.saturating_mul(2);
    let engine = Engine::new(requests.clone(), pkid_range, &opts);

    let window = Arc::new(Semaphore::new(usize::from(b.max_inflight)));
    let qos0_window = Arc::new(Semaphore::new(b.max_queued_qos0));
    let (state, _) = watch::channel(ConnectionState::Connecting);
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let shared = Arc::new(Shared {
        outbound: Mutex::new(Outbound::new(
            pkid_range,
            window.clone(),
            qos0_window.clone(),
        )),
        window,
        qos0_window,
        inbound: Inbound::new(requests.clone()),
        requests,
        router: RwLock::new(Router::default()),
        state,
        events,
        closing: AtomicBool::new(false),
        shutdown: CancellationToken::new(),
        force_reconnect: tokio::sync::Notify::new(),
        chains: std::sync::OnceLock::new(),
        driver: tokio::sync::Mutex::new(None),
        opts,
    });
    let _ = shared.chains.set(build_chains(&shared));
    let (first_tx, first_rx) = oneshot::channel();
    let driver = Driver::new(shared.clone(), engine, fail_fast.then_some(first_tx));
    let handle = tokio::spawn(driver.run());
    if let Some(timeout) = shared.opts.builder.ack_timeout {
        tokio::spawn(super::watchdog::run(shared.clone(), timeout));
    }
    if let Ok(mut slot) = shared.driver.try_lock() {
        *slot = Some(handle);
    }
    (Client::owned(shared), first_rx)
}

/// Wrap each operation's last hop in the layers set on the builder.
fn build_chains(shared: &Arc<Shared>) -> Chains {
    let layers = &shared.opts.builder.layers;
    let weak = Arc::downgrade(shared);
    Chains {
        publisher: (!layers.publish.is_empty()).then(|| {
            apply(
                &layers.publish,
                BoxPublisher::new(ClientPublisher(weak.clone())),
            )
        }),
        subscriber: (!layers.subscribe.is_empty()).then(|| {
            apply(
                &layers.subscribe,
                BoxSubscriber::new(ClientSubscriber(weak.clone())),
            )
        }),
        unsubscriber: (!layers.unsubscribe.is_empty()).then(|| {
            apply(
                &layers.unsubscribe,
                BoxUnsubscriber::new(ClientUnsubscriber(weak.clone())),
            )
        }),
        stopper: (!layers.stop.is_empty())
            .then(|| apply(&layers.stop, BoxStopper::new(ClientStopper(weak)))),
    }
}

/// The last hop of the stop chain: the graceful stop.
#[derive(Debug)]
struct ClientStopper(Weak<Shared>);

impl Stopper for ClientStopper {
    async fn stop(&self) {
        if let Some(shared) = self.0.upgrade() {
            stop(&shared).await;
        }
    }
}

pub(crate) async fn stop(shared: &Arc<Shared>) {
    let first = !shared.closing.swap(true, Ordering::AcqRel);
    if first {
        wait_idle(shared, shared.opts.builder.graceful_shutdown).await;
    }
    shared.begin_shutdown();
    let handle = shared.driver.lock().await.take();
    match handle {
        Some(mut handle) => {
            // The DISCONNECT is written at once unless the connection is stuck;
            // give it the write timeout, then cut.
            let grace = shared.opts.builder.write_timeout + Duration::from_secs(1);
            if timeout(grace, &mut handle).await.is_err() {
                tracing::warn!("courier: driver did not stop in time; aborting it");
                handle.abort();
                let _ = handle.await;
                super::driver::finish(shared, false);
            }
        }
        None => {
            let mut rx = shared.state.subscribe();
            let _ = rx.wait_for(|s| *s == ConnectionState::Stopped).await;
        }
    }
}

/// Wait until nothing is in flight, or `period` passed.
async fn wait_idle(shared: &Shared, period: Duration) {
    let deadline = Instant::now() + period;
    let idle = shared.outbound().idle_signal();
    loop {
        let notified = idle.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if shared.outbound().is_idle() {
            return;
        }
        if timeout_at(deadline, notified).await.is_err() {
            tracing::warn!("courier: graceful shutdown period over with messages still in flight");
            return;
        }
    }
}
