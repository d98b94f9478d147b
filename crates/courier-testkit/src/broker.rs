//! The per-test broker.

use std::io;
use std::path::Path;

use crate::embedded::EmbeddedBroker;
use crate::mosquitto::Mosquitto;
use crate::nats::Nats;
use crate::process::BrokerProcess;
use crate::rabbitmq::RabbitMq;
use crate::{BrokerKind, BrokerOptions, Capability, HOST, PORT_ATTEMPTS, free_port, loopback};

/// A running broker on a free loopback port.
///
/// Dropping a Mosquitto- or NATS-backed `TestBroker` kills the broker process
/// (SIGKILL, then waits for it) and removes its temporary directory, so no
/// broker outlives the test; this works inside or outside a Tokio runtime.
/// A test process that is itself killed (SIGKILL) cannot clean up.
///
/// An embedded (rumqttd) broker cannot be stopped: dropping the `TestBroker`
/// leaves it running, idle, until the test process exits. A RabbitMQ
/// `TestBroker` is a handle on the one node of the test process, which is
/// killed when the process exits.
///
/// What a broker kind supports is [`BrokerKind::supports`]; tests needing a
/// capability call [`skip_unless`](Self::skip_unless).
#[derive(Debug)]
pub struct TestBroker {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Mosquitto(Mosquitto),
    Embedded(EmbeddedBroker),
    Nats(Nats),
    RabbitMq(&'static RabbitMq),
}

impl TestBroker {
    /// Starts a broker with [`BrokerOptions::new`] of the kind chosen by
    /// [`BrokerKind::from_env`].
    ///
    /// # Errors
    ///
    /// See [`start_with`](Self::start_with).
    pub async fn start() -> io::Result<TestBroker> {
        Self::start_with(BrokerOptions::new()).await
    }

    /// Starts a broker with these options on a free port of 127.0.0.1 and
    /// waits until it accepts TCP connections (at most 5 s; the first
    /// RabbitMQ of a test process at most 60 s, later ones share it).
    ///
    /// # Errors
    ///
    /// Errors of [`BrokerKind::from_env`] when no kind was set; the broker
    /// not installed ([`io::ErrorKind::NotFound`]); credentials with the
    /// embedded broker or RabbitMQ ([`io::ErrorKind::Unsupported`]); a broker
    /// that exits or does not become ready (the message then holds the end of
    /// its log).
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops (kills) a broker being started; the shared RabbitMQ
    /// node is then started by the next caller.
    pub async fn start_with(options: BrokerOptions) -> io::Result<TestBroker> {
        let kind = match options.kind {
            Some(kind) => kind,
            None => BrokerKind::from_env()?,
        };
        if options.unix_socket && !kind.supports(Capability::UnixSocket) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "a Unix socket listener needs a real Mosquitto; {} listens on TCP only",
                    kind.name()
                ),
            ));
        }
        let backend = match kind {
            BrokerKind::Mosquitto => Backend::Mosquitto(Mosquitto::start(&options).await?),
            BrokerKind::Embedded => Backend::Embedded(start_embedded(&options).await?),
            BrokerKind::Nats => Backend::Nats(Nats::start(&options).await?),
            BrokerKind::RabbitMq => {
                if options.credentials.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "credentials are not supported with RabbitMQ: its node is shared \
                         by the tests of a process and allows the guest user",
                    ));
                }
                Backend::RabbitMq(RabbitMq::shared().await?)
            }
        };
        Ok(TestBroker { backend })
    }

    /// Which broker this is.
    pub fn kind(&self) -> BrokerKind {
        match self.backend {
            Backend::Mosquitto(_) => BrokerKind::Mosquitto,
            Backend::Embedded(_) => BrokerKind::Embedded,
            Backend::Nats(_) => BrokerKind::Nats,
            Backend::RabbitMq(_) => BrokerKind::RabbitMq,
        }
    }

    /// The host the broker listens on: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The port the broker listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        match &self.backend {
            Backend::Mosquitto(mosquitto) => mosquitto.process_ref().port(),
            Backend::Embedded(embedded) => embedded.addr().port(),
            Backend::Nats(nats) => nats.process_ref().port(),
            Backend::RabbitMq(node) => node.port(),
        }
    }

    /// The broker URL, `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://{}:{}", self.host(), self.port())
    }

    /// The port of RabbitMQ's Web MQTT listener (MQTT over WebSocket);
    /// `None` for the other brokers.
    pub fn web_mqtt_port(&self) -> Option<u16> {
        match &self.backend {
            Backend::RabbitMq(node) => Some(node.web_mqtt_port()),
            _ => None,
        }
    }

    /// The URL of RabbitMQ's Web MQTT endpoint, `ws://127.0.0.1:PORT/ws`;
    /// `None` for the other brokers.
    pub fn web_mqtt_url(&self) -> Option<String> {
        self.web_mqtt_port()
            .map(|port| format!("ws://{}:{port}/ws", self.host()))
    }

    /// Whether this broker supports `capability` ([`BrokerKind::supports`]).
    pub fn supports(&self, capability: Capability) -> bool {
        self.kind().supports(capability)
    }

    /// Returns true when the test should be skipped because this broker lacks
    /// one of the capabilities in `needs`, and then prints why to stderr
    /// ([`BrokerKind::skip_unless`]).
    pub fn skip_unless(&self, test_name: &str, needs: &[Capability]) -> bool {
        self.kind().skip_unless(test_name, needs)
    }

    /// Graceful stop (SIGTERM); waits until the process exited (Mosquitto
    /// then has written its persistence file, if any) and the port is
    /// closed. Stopping a stopped broker does nothing.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] for the embedded broker and RabbitMQ;
    /// [`io::ErrorKind::TimedOut`] if the broker did not exit within 10 s (it
    /// is then killed).
    pub async fn stop(&mut self) -> io::Result<()> {
        self.process("stop")?.stop().await
    }

    /// Kills the broker (SIGKILL: no persistence flush), waits until the
    /// process exited and the port is closed. Killing a stopped broker does
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] for the embedded broker and RabbitMQ.
    pub async fn kill(&mut self) -> io::Result<()> {
        self.process("kill")?.kill().await
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered,
    /// like a stalled broker or a half-open link. Undo with [`resume`](Self::resume).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] for the embedded broker and RabbitMQ.
    pub fn pause(&mut self) -> io::Result<()> {
        self.process("pause")?.freeze(true)
    }

    /// Resumes a [`pause`](Self::pause)d broker (SIGCONT).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] for the embedded broker and RabbitMQ.
    pub fn resume(&mut self) -> io::Result<()> {
        self.process("resume")?.freeze(false)
    }

    /// Starts the broker again on the SAME port with the same config and
    /// persistence directory (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill)). Waits until it accepts TCP connections.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] for the embedded broker and RabbitMQ;
    /// [`io::ErrorKind::AlreadyExists`] if it is still running;
    /// [`io::ErrorKind::AddrInUse`] if the port stayed taken by someone
    /// else; a broker that exits or does not become ready.
    pub async fn start_again(&mut self) -> io::Result<()> {
        self.process("start_again")?.start_again().await
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    ///
    /// # Errors
    ///
    /// Those of `stop` and `start_again`.
    pub async fn restart(&mut self) -> io::Result<()> {
        let process = self.process("restart")?;
        process.stop().await?;
        process.start_again().await
    }

    /// The broker's log so far (Mosquitto: all runs, `log_type all`; NATS:
    /// all runs; RabbitMQ: the shared node's), for debugging failing tests.
    /// Empty for the embedded broker.
    pub fn log(&self) -> String {
        match &self.backend {
            Backend::Mosquitto(mosquitto) => mosquitto.process_ref().log(),
            Backend::Embedded(_) => String::new(),
            Backend::Nats(nats) => nats.process_ref().log(),
            Backend::RabbitMq(node) => node.log(),
        }
    }

    /// The path of Mosquitto's Unix socket listener, when started with
    /// [`BrokerOptions::unix_socket`]; `None` otherwise.
    pub fn unix_socket(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Mosquitto(mosquitto) => mosquitto.unix_socket(),
            Backend::Embedded(_) | Backend::Nats(_) | Backend::RabbitMq(_) => None,
        }
    }

    /// The private directory where Mosquitto keeps `mosquitto.db`, when
    /// started with [`BrokerOptions::persistence`]; `None` otherwise and for
    /// the embedded broker.
    pub fn persistence_dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Mosquitto(mosquitto) => mosquitto.persistence_dir(),
            _ => None,
        }
    }

    /// The broker's own process, for stop, kill, freeze and restart.
    fn process(&mut self, operation: &str) -> io::Result<&mut BrokerProcess> {
        let port = self.port();
        match &mut self.backend {
            Backend::Mosquitto(mosquitto) => Ok(mosquitto.process()),
            Backend::Nats(nats) => Ok(nats.process()),
            Backend::Embedded(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{operation} needs a broker process; the embedded broker on {HOST}:{port} \
                     cannot be stopped or restarted"
                ),
            )),
            Backend::RabbitMq(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{operation} is not supported with RabbitMQ: its node on {HOST}:{port} is \
                     shared by the tests of this process"
                ),
            )),
        }
    }
}

/// Starts an embedded broker on a free port, retrying when the port was
/// taken meanwhile.
async fn start_embedded(options: &BrokerOptions) -> io::Result<EmbeddedBroker> {
    if options.credentials.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "credentials need a real Mosquitto; the embedded broker allows anonymous access only",
        ));
    }
    let max_payload_size = options
        .message_size_limit
        .and_then(|bytes| usize::try_from(bytes).ok());
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let addr = loopback(free_port()?);
        match EmbeddedBroker::start_with_limit(addr, max_payload_size).await {
            Ok(broker) if broker.is_running() => return Ok(broker),
            Ok(broker) => {
                last_error = Some(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("the embedded MQTT broker on {} stopped", broker.addr()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("the embedded MQTT broker did not start")))
}
