//! Test support for courier-rs: an MQTT broker per test.
//!
//! [`TestBroker`] starts a real Mosquitto or NATS server (a child process with
//! a generated config in a private temporary directory, on a free loopback
//! port), an embedded [rumqttd](https://docs.rs/rumqttd) broker running on
//! its own OS threads, or a RabbitMQ node (one per test process, shared by its
//! tests). Which one is chosen by [`BrokerKind::from_env`] (the
//! `COURIER_TEST_BROKER` environment variable, else whatever is installed), or
//! explicitly with [`BrokerOptions::kind`].
//!
//! The brokers differ in what they support ([`BrokerKind::supports`], by
//! [`Capability`]): only Mosquitto and NATS can be stopped, killed and started
//! again on the same port, which is what reconnect tests need. Tests call
//! [`TestBroker::skip_unless`] first.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use courier_testkit::{Capability, TestBroker};
//!
//! let mut broker = TestBroker::start().await?;
//! if broker.skip_unless("reconnects_after_restart", &[Capability::Restart]) {
//!     return Ok(());
//! }
//! println!("broker at {}", broker.url());
//! broker.restart().await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`NatsCluster`] starts a cluster of NATS servers (routes, replicated
//! JetStream, an MQTT listener per node) for failover tests.
//!
//! [`EmbeddedBroker`] starts a rumqttd broker on a given address, for example
//! programs that need a broker on `localhost:1883` when none is running.
//!
//! For fault injection: [`FaultProxy`] sits between a client and a broker and
//! breaks, stalls, slows or cuts the connection on command (also at an exact
//! MQTT packet), and [`MockBroker`] is a scripted broker for what no real broker
//! does on cue (duplicate QoS 2 deliveries, unknown PUBRELs, withheld or
//! reordered acknowledgements, malformed frames). Both share the MQTT framing of
//! [`mqtt`].
//!
//! For transports: [`WsFront`] puts a WebSocket listener (`ws://`, or `wss://` with
//! given certificates) before a broker's TCP port, and [`ConnectProxy`] is an HTTP
//! CONNECT proxy (optionally requiring credentials) that counts its tunnels.

mod accept;
mod broker;
mod capability;
mod connect_proxy;
mod embedded;
mod kind;
pub mod mock;
mod mosquitto;
pub mod mqtt;
mod nats;
mod nats_cluster;
mod options;
mod process;
pub mod proxy;
mod rabbitmq;
mod ws_front;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

pub use broker::TestBroker;
pub use capability::Capability;
pub use connect_proxy::ConnectProxy;
pub use embedded::EmbeddedBroker;
pub use kind::BrokerKind;
pub use mock::{MockBroker, MockConnection};
pub use nats_cluster::NatsCluster;
pub use options::BrokerOptions;
pub use proxy::{Close, Direction, FaultProxy};
pub use ws_front::WsFront;

/// The loopback address every test broker listens on.
pub(crate) const HOST: &str = "127.0.0.1";

/// How long a broker may take to accept TCP connections after being started.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often readiness (or shutdown) is polled.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many fresh ports a start tries when the chosen port was taken meanwhile.
pub(crate) const PORT_ATTEMPTS: usize = 5;

/// A free TCP port on 127.0.0.1 (bind to port 0, read it, drop the listener).
///
/// Another process may take the port before it is used again; the brokers of
/// this crate retry on a new port when that happens.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Tries one TCP connection to `addr`, giving up after a short timeout.
pub(crate) async fn can_connect(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

/// The loopback socket address of `port`.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() -> io::Result<()> {
        let port = free_port()?;
        assert_ne!(port, 0);
        let _listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        Ok(())
    }
}
