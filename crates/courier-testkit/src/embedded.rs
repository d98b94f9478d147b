//! An embedded rumqttd broker.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tokio::time::{Instant, sleep};

use crate::{POLL_INTERVAL, READY_TIMEOUT, can_connect};

/// Largest packet the embedded broker accepts by default (1 MiB).
const DEFAULT_MAX_PAYLOAD_SIZE: usize = 1024 * 1024;

/// An embedded in-process rumqttd broker bound to a given address (used by
/// the quickstart example when nothing listens on `localhost:1883`).
///
/// It speaks MQTT 3.1.1 without authentication, runs on its own OS threads
/// and lives until the process exits: dropping an `EmbeddedBroker` does not
/// stop it, and it cannot be stopped otherwise.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Starts on `addr` (e.g. `127.0.0.1:1883`) and waits until it accepts
    /// TCP connections.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for port 0 (the chosen port could not
    /// be learnt), [`io::ErrorKind::AddrInUse`] (or another bind error) when
    /// `addr` cannot be bound, [`io::ErrorKind::TimedOut`] when the broker
    /// does not accept connections within 5 s.
    pub async fn start(addr: SocketAddr) -> io::Result<EmbeddedBroker> {
        Self::start_with_limit(addr, None).await
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Like [`start`](Self::start), with an optional `max_payload_size`.
    pub(crate) async fn start_with_limit(
        addr: SocketAddr,
        max_payload_size: Option<usize>,
    ) -> io::Result<EmbeddedBroker> {
        if addr.port() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the embedded broker needs a fixed port, not 0 (see courier_testkit::free_port)",
            ));
        }
        // rumqttd only logs a failed bind (and its start() then returns Ok),
        // and a readiness probe would happily connect to whoever holds the
        // port: check that the address is free first, for a clear error.
        drop(TcpListener::bind(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start the embedded MQTT broker on {addr}: {e}"),
            )
        })?);

        let config = config(addr, max_payload_size.unwrap_or(DEFAULT_MAX_PAYLOAD_SIZE));
        let thread = std::thread::Builder::new()
            .name(format!("courier-testkit-rumqttd-{}", addr.port()))
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                // Blocks while the server threads run, i.e. for ever unless
                // the listener failed.
                let _ = broker.start();
            })
            .map_err(|e| io::Error::new(e.kind(), format!("cannot spawn rumqttd thread: {e}")))?;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if thread.is_finished() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "the embedded MQTT broker stopped before accepting connections \
                         on {addr} (address taken meanwhile?)"
                    ),
                ));
            }
            if can_connect(addr).await {
                return Ok(EmbeddedBroker { addr, thread });
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the embedded MQTT broker did not accept connections on {addr} \
                         within {READY_TIMEOUT:?}"
                    ),
                ));
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Whether the broker's threads are still running.
    pub(crate) fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }
}

/// A rumqttd config with one MQTT 3.1.1 listener on `addr` and generous limits.
fn config(addr: SocketAddr, max_payload_size: usize) -> Config {
    let server = ServerSettings {
        name: format!("courier-testkit-v4-{}", addr.port()),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}
