//! The per-test broker.

use std::io;
use std::path::Path;

use crate::embedded::EmbeddedBroker;
use crate::mosquitto::Mosquitto;
use crate::{BrokerKind, BrokerOptions, HOST, PORT_ATTEMPTS, free_port, loopback};

/// A running broker on a free loopback port.
///
/// Dropping a Mosquitto-backed `TestBroker` kills the broker process
/// (SIGKILL, then waits for it) and removes its temporary directory, so no
/// Mosquitto outlives the test; this works inside or outside a Tokio runtime.
/// A test process that is itself killed (SIGKILL) cannot clean up.
///
/// An embedded (rumqttd) broker cannot be stopped: dropping the `TestBroker`
/// leaves it running, idle, until the test process exits.
#[derive(Debug)]
pub struct TestBroker {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Mosquitto(Mosquitto),
    Embedded(EmbeddedBroker),
}

impl TestBroker {
    /// Starts a broker with [`BrokerOptions::new`]: Mosquitto or embedded as
    /// chosen by [`BrokerKind::from_env`].
    ///
    /// # Errors
    ///
    /// See [`start_with`](Self::start_with).
    pub async fn start() -> io::Result<TestBroker> {
        Self::start_with(BrokerOptions::new()).await
    }

    /// Starts a broker with these options on a free port of 127.0.0.1 and
    /// waits until it accepts TCP connections (at most 5 s).
    ///
    /// # Errors
    ///
    /// Errors of [`BrokerKind::from_env`] when no kind was set; Mosquitto
    /// not installed ([`io::ErrorKind::NotFound`]); credentials with the
    /// embedded broker ([`io::ErrorKind::Unsupported`]); a broker that exits
    /// or does not become ready (the message then holds the end of the
    /// Mosquitto log).
    pub async fn start_with(options: BrokerOptions) -> io::Result<TestBroker> {
        let kind = match options.kind {
            Some(kind) => kind,
            None => BrokerKind::from_env()?,
        };
        let backend = match kind {
            BrokerKind::Mosquitto => Backend::Mosquitto(Mosquitto::start(&options).await?),
            BrokerKind::Embedded => Backend::Embedded(start_embedded(&options).await?),
        };
        Ok(TestBroker { backend })
    }

    /// Which broker this is.
    pub fn kind(&self) -> BrokerKind {
        match self.backend {
            Backend::Mosquitto(_) => BrokerKind::Mosquitto,
            Backend::Embedded(_) => BrokerKind::Embedded,
        }
    }

    /// The host the broker listens on: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The port the broker listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        match &self.backend {
            Backend::Mosquitto(mosquitto) => mosquitto.port(),
            Backend::Embedded(embedded) => embedded.addr().port(),
        }
    }

    /// The broker URL, `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://{}:{}", self.host(), self.port())
    }

    /// Whether [`stop`](Self::stop), [`kill`](Self::kill),
    /// [`start_again`](Self::start_again) and [`restart`](Self::restart)
    /// work: true for Mosquitto only.
    pub fn supports_restart(&self) -> bool {
        matches!(self.backend, Backend::Mosquitto(_))
    }

    /// Graceful stop (SIGTERM); waits until the process exited (Mosquitto
    /// then has written its persistence file, if any) and the port is
    /// closed. Stopping a stopped broker does nothing.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] for the embedded broker;
    /// [`io::ErrorKind::TimedOut`] if Mosquitto did not exit within 10 s (it
    /// is then killed).
    pub async fn stop(&mut self) -> io::Result<()> {
        self.mosquitto("stop")?.stop().await
    }

    /// Kills the broker (SIGKILL: no persistence flush), waits until the
    /// process exited and the port is closed. Killing a stopped broker does
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] for the embedded broker.
    pub async fn kill(&mut self) -> io::Result<()> {
        self.mosquitto("kill")?.kill().await
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered,
    /// like a stalled broker or a half-open link. Undo with [`resume`](Self::resume).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] for the embedded broker.
    pub fn pause(&mut self) -> io::Result<()> {
        self.mosquitto("pause")?.freeze(true)
    }

    /// Resumes a [`pause`](Self::pause)d broker (SIGCONT).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] for the embedded broker.
    pub fn resume(&mut self) -> io::Result<()> {
        self.mosquitto("resume")?.freeze(false)
    }

    /// Starts the broker again on the SAME port with the same config and
    /// persistence directory (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill)). Waits until it accepts TCP connections.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] for the embedded broker;
    /// [`io::ErrorKind::AlreadyExists`] if it is still running;
    /// [`io::ErrorKind::AddrInUse`] if the port stayed taken by someone
    /// else; a broker that exits or does not become ready.
    pub async fn start_again(&mut self) -> io::Result<()> {
        self.mosquitto("start_again")?.start_again().await
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    ///
    /// # Errors
    ///
    /// Those of `stop` and `start_again`.
    pub async fn restart(&mut self) -> io::Result<()> {
        let mosquitto = self.mosquitto("restart")?;
        mosquitto.stop().await?;
        mosquitto.start_again().await
    }

    /// Returns true when the test should be skipped because it needs a
    /// restart and this is the embedded broker; then prints
    /// `SKIP <test_name>: needs a real Mosquitto (restart), COURIER_TEST_BROKER=embedded`
    /// to stderr.
    pub fn skip_unless_restartable(&self, test_name: &str) -> bool {
        if self.supports_restart() {
            return false;
        }
        eprintln!(
            "SKIP {test_name}: needs a real Mosquitto (restart), COURIER_TEST_BROKER=embedded"
        );
        true
    }

    /// The Mosquitto log so far (all runs of this broker, `log_type all`),
    /// for debugging failing tests. Empty for the embedded broker.
    pub fn log(&self) -> String {
        match &self.backend {
            Backend::Mosquitto(mosquitto) => mosquitto.log(),
            Backend::Embedded(_) => String::new(),
        }
    }

    /// The path of Mosquitto's Unix socket listener, when started with
    /// [`BrokerOptions::unix_socket`]; `None` otherwise.
    pub fn unix_socket(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Mosquitto(mosquitto) => mosquitto.unix_socket(),
            Backend::Embedded(_) => None,
        }
    }

    /// The private directory where Mosquitto keeps `mosquitto.db`, when
    /// started with [`BrokerOptions::persistence`]; `None` otherwise and for
    /// the embedded broker.
    pub fn persistence_dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Mosquitto(mosquitto) => mosquitto.persistence_dir(),
            Backend::Embedded(_) => None,
        }
    }

    fn mosquitto(&mut self, operation: &str) -> io::Result<&mut Mosquitto> {
        match &mut self.backend {
            Backend::Mosquitto(mosquitto) => Ok(mosquitto),
            Backend::Embedded(embedded) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{operation} needs a real Mosquitto; the embedded broker on {} \
                     cannot be stopped or restarted",
                    embedded.addr()
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
    if options.unix_socket {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a Unix socket listener needs a real Mosquitto; the embedded broker listens on TCP only",
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
