//! Starting and stopping: builds the request queue and connection engine from the
//! options, spawns the driver task, and stops it gracefully.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Notify, Semaphore, oneshot, watch};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::budget::InboundBudget;
use super::consumers::Consumers;
use super::dispatch::run_handler;
use super::driver::{Driver, Ending, finish};
use super::engine::Engine;
use super::events::{ConnectionState, Event};
use super::inbound::Inbound;
use super::middleware::{
    BoxHandler, BoxPublisher, BoxStopper, BoxSubscriber, BoxUnsubscriber, Stopper, apply,
};
use super::options::ValidOptions;
use super::outbound::Outbound;
use super::publish::ClientPublisher;
use super::requests::RequestQueue;
use super::router::{Router, queue};
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
    let budget = InboundBudget::new(b.max_inbound_buffer);
    let engine = Engine::new(requests.clone(), budget.clone(), pkid_range, &opts);

    let window = Arc::new(Semaphore::new(usize::from(b.max_inflight)));
    let qos0_window = Arc::new(Semaphore::new(b.max_queued_qos0));
    let (state, _) = watch::channel(ConnectionState::Connecting);
    let consumers = Arc::new(Consumers::default());
    let shared = Arc::new(Shared {
        outbound: Mutex::new(Outbound::new(
            pkid_range,
            window.clone(),
            qos0_window.clone(),
        )),
        window,
        qos0_window,
        inbound: Inbound::new(requests.clone(), consumers.clone()),
        consumers,
        budget,
        requests,
        router: RwLock::new(Router::default()),
        state,
        events: std::sync::OnceLock::new(),
        closing: AtomicBool::new(false),
        aborted: AtomicBool::new(false),
        session_present: AtomicU8::new(0),
        refused: Mutex::new(None),
        shutdown: CancellationToken::new(),
        force_reconnect: tokio::sync::Notify::new(),
        chains: std::sync::OnceLock::new(),
        driver: tokio::sync::Mutex::new(None),
        driver_abort: std::sync::OnceLock::new(),
        opts,
    });
    let _ = shared.chains.set(build_chains(&shared));
    if let Some(handler) = shared.opts.builder.unrouted_handler.clone() {
        spawn_fallback(&shared, handler);
    }
    let (first_tx, first_rx) = oneshot::channel();
    let driver = Driver::new(shared.clone(), engine, fail_fast.then_some(first_tx));
    let span = connection_span(&shared.opts);
    let handle = tokio::spawn(supervise(shared.clone(), driver.run()).instrument(span.clone()));
    let _ = shared.driver_abort.set(handle.abort_handle());
    if let Some(timeout) = shared.opts.builder.ack_timeout {
        tokio::spawn(super::watchdog::run(shared.clone(), timeout).instrument(span));
    }
    if let Ok(mut slot) = shared.driver.try_lock() {
        *slot = Some(handle);
    }
    (Client::owned(shared), first_rx)
}

/// The `tracing` span of one connection's background work (the driver and the ack
/// watchdog): courier's log events from there carry the client id and the broker,
/// e.g. a reconnect attempt's warning.
///
/// A root span (`parent: None`): it lives as long as the client and must not become
/// the child of whatever span `connect` was called in. ERROR level so that it is
/// enabled whenever courier's warnings and errors are: a span the filter disables
/// labels nothing (under `RUST_LOG=warn` an INFO span would leave the very warnings
/// it exists for without client id). Handler tasks and `on_connect` callbacks run
/// application code and are not in it, so the application's own spans there never
/// become children of this one.
fn connection_span(opts: &ValidOptions) -> tracing::Span {
    tracing::error_span!(
        parent: None,
        "courier",
        client_id = %opts.builder.client_id,
        broker = %opts.broker(),
    )
}

/// Run the driver; if it panics (a bug, or a panic in what it calls synchronously:
/// an `on_event` callback, a custom backoff), end the client as if the connection
/// were lost for good, and say why: without this nothing would mark it stopped,
/// fail its publishes or wake `wait_connected()`.
async fn supervise(shared: Arc<Shared>, run: impl Future<Output = ()>) {
    let Err(panic) = AssertUnwindSafe(run).catch_unwind().await else {
        return;
    };
    let reason = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".to_owned());
    tracing::error!(
        client_id = %shared.opts.builder.client_id,
        %reason,
        "courier: the client's background task panicked; the client stops"
    );
    // The events go out even if a callback panics again on them.
    let ended = std::panic::catch_unwind(AssertUnwindSafe(|| {
        shared.emit(Event::Crashed {
            reason: reason.clone(),
        });
    }));
    let finished = std::panic::catch_unwind(AssertUnwindSafe(|| finish(&shared, Ending::Lost)));
    if ended.is_err() || finished.is_err() {
        tracing::error!("courier: an event callback panicked again while the client stopped");
    }
}

/// Run the fallback handler (`unrouted_handler`) on its own task, wrapped in the
/// handler layers like any subscription's handler.
fn spawn_fallback(shared: &Arc<Shared>, handler: BoxHandler) {
    let b = &shared.opts.builder;
    let (sink, source) = queue(
        b.subscription_buffer,
        "unrouted messages",
        shared.consumers.clone(),
    );
    shared.router_write().set_fallback(sink);
    let handler = apply(&b.layers.handler, handler);
    tokio::spawn(run_handler(
        Client::unowned(shared.clone()),
        handler,
        source,
        std::num::NonZeroUsize::MIN,
    ));
}

/// Wrap each operation's last hop in the layers set on the builder.
fn build_chains(shared: &Arc<Shared>) -> Chains {
    let weak = Arc::downgrade(shared);
    Chains::build(
        &shared.opts.builder.layers,
        || BoxPublisher::new(ClientPublisher(weak.clone())),
        || BoxSubscriber::new(ClientSubscriber(weak.clone())),
        || BoxUnsubscriber::new(ClientUnsubscriber(weak.clone())),
        || BoxStopper::new(ClientStopper(weak.clone())),
    )
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
    if shared.consumers.close() {
        drain(shared).await;
    }
    shared.begin_shutdown();
    let handle = shared.driver.lock().await.take();
    match handle {
        Some(mut handle) => {
            // The DISCONNECT is written at once unless the connection is stuck;
            // give it the write timeout, then cut.
            let grace = shared
                .opts
                .builder
                .write_timeout
                .saturating_add(Duration::from_secs(1));
            if timeout(grace, &mut handle).await.is_err() {
                tracing::warn!(
                    client_id = %shared.opts.builder.client_id,
                    broker = %shared.opts.broker(),
                    "courier: driver did not stop in time; aborting it"
                );
                handle.abort();
                let _ = handle.await;
            }
            // A no-op when the driver wound down itself; needed when it was cut.
            finish(shared, Ending::Lost);
        }
        None => wait_stopped(shared).await,
    }
}

/// The graceful part of a stop, within the graceful shutdown period: end delivery,
/// let the handlers at work finish, then refuse new work and wait for the
/// publishes in flight; acknowledge nothing more after that.
async fn drain(shared: &Shared) {
    let deadline = deadline_after(shared.opts.builder.graceful_shutdown);
    shared.router_write().close();
    let consumers = &shared.consumers;
    let handled = wait_while_connected(shared, deadline, consumers.idle_signal(), || {
        consumers.is_idle()
    })
    .await;
    shared.closing.store(true, Ordering::Release);
    let idle = shared.outbound().idle_signal();
    let acknowledged =
        wait_while_connected(shared, deadline, &idle, || shared.outbound().is_idle()).await;
    if !(handled && acknowledged) {
        tracing::warn!(
            client_id = %shared.opts.builder.client_id,
            broker = %shared.opts.broker(),
            handled,
            acknowledged,
            "courier: stopping with handlers running or messages in flight \
             (graceful shutdown period over, or not connected)"
        );
    }
    // From here on no acknowledgement is sent: a handler still running is cancelled
    // and its message comes back in the next session.
    shared.inbound.on_session_lost();
    consumers.cancel_running();
}

/// Wait until `done`, while connected and before `deadline`; true when `done`.
async fn wait_while_connected(
    shared: &Shared,
    deadline: Instant,
    signal: &Notify,
    done: impl Fn() -> bool,
) -> bool {
    let mut state = shared.state.subscribe();
    loop {
        let notified = signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return true;
        }
        if !state.borrow_and_update().is_connected() {
            return false;
        }
        tokio::select! {
            () = notified => {}
            changed = state.changed() => {
                if changed.is_err() {
                    return false;
                }
            }
            () = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

/// `period` from now, or a far-off instant when that does not fit.
pub(crate) fn deadline_after(period: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(period).unwrap_or_else(|| now + FAR)
}

pub(crate) async fn abort(shared: &Arc<Shared>) {
    shared.aborted.store(true, Ordering::Release);
    shared.closing.store(true, Ordering::Release);
    // Nothing more is acknowledged, not even what handlers finish now.
    shared.inbound.on_session_lost();
    shared.end_delivery();
    shared.consumers.cancel_running();
    if let Some(driver) = shared.driver_abort.get() {
        driver.abort();
    }
    shared.shutdown.cancel();
    let handle = shared.driver.lock().await.take();
    match handle {
        Some(handle) => {
            let _ = handle.await;
            finish(shared, Ending::Aborted);
        }
        None => wait_stopped(shared).await,
    }
}

async fn wait_stopped(shared: &Shared) {
    let mut rx = shared.state.subscribe();
    let _ = rx.wait_for(|s| *s == ConnectionState::Stopped).await;
}
