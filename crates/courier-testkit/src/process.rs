//! A broker child process: spawned with its config, ready when its log says so
//! and its port accepts TCP connections, stopped, killed, frozen and started again
//! by pid. Mosquitto and NATS are both run this way.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::time::{Instant, sleep};

use crate::{HOST, POLL_INTERVAL, PORT_ATTEMPTS, READY_TIMEOUT, can_connect, loopback};

/// How long a graceful stop may take before the broker is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of the log goes into an error message.
const LOG_TAIL_LINES: usize = 40;

/// What differs between the brokers run as child processes.
#[derive(Debug, Clone)]
pub(crate) struct ProcessSpec {
    /// The broker's name in messages: `Mosquitto`, `NATS`.
    pub(crate) name: &'static str,
    pub(crate) binary: PathBuf,
    pub(crate) args: Vec<String>,
    /// Environment variables added to this process's.
    pub(crate) env: Vec<(String, String)>,
    /// The broker's own log file.
    pub(crate) log_path: PathBuf,
    /// Where the process's stderr is appended.
    pub(crate) stderr_path: PathBuf,
    /// Whether the log of this run (and the time since the spawn) says the
    /// broker has started up; a TCP connection must succeed as well.
    pub(crate) started_up: fn(log: &str, elapsed: Duration) -> bool,
    /// How long the broker may take to start up.
    pub(crate) ready_timeout: Duration,
    /// Keep a pipe to the child's stdin open for as long as the child is
    /// held: it reads EOF when this process exits, however it exits (a
    /// watchdog script uses that to clean up after a shared broker).
    pub(crate) stdin_pipe: bool,
}

/// A broker child process on a fixed loopback port.
#[derive(Debug)]
pub(crate) struct BrokerProcess {
    spec: ProcessSpec,
    port: u16,
    child: Option<Child>,
}

impl BrokerProcess {
    /// A process not yet started; [`start`](Self::start) spawns it.
    pub(crate) fn new(spec: ProcessSpec, port: u16) -> BrokerProcess {
        BrokerProcess {
            spec,
            port,
            child: None,
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The broker's log so far (empty if it cannot be read).
    pub(crate) fn log(&self) -> String {
        read_from(&self.spec.log_path, 0)
    }

    /// SIGTERM, wait for the exit, wait until the port is closed.
    pub(crate) async fn stop(&mut self) -> io::Result<()> {
        let Some(pid) = self.running_pid()? else {
            return Ok(());
        };
        match signal::kill(pid, Signal::SIGTERM) {
            // ESRCH: it already exited and only needs reaping.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(errno) => {
                return Err(io::Error::other(format!(
                    "cannot send SIGTERM to {} (pid {pid}): {errno}",
                    self.spec.name
                )));
            }
        }
        if !self.wait_exit(STOP_TIMEOUT).await? {
            self.kill_now();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} (pid {pid}) did not exit within {STOP_TIMEOUT:?} of SIGTERM \
                     and was killed{}",
                    self.spec.name,
                    self.diagnostics()
                ),
            ));
        }
        self.wait_port_closed().await
    }

    /// SIGSTOP (`pause = true`) or SIGCONT: freeze the process with its sockets open,
    /// so clients stay connected but get no answer.
    ///
    /// A signal is delivered asynchronously: a thread of a multi-threaded broker
    /// (NATS) running on another core can still answer a packet just after
    /// `kill` returned. A freeze therefore waits until every thread of the
    /// process is stopped (`/proc/<pid>/task/*/stat`).
    pub(crate) fn freeze(&mut self, pause: bool) -> io::Result<()> {
        let Some(pid) = self.running_pid()? else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("{} is not running", self.spec.name),
            ));
        };
        let sig = if pause {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        signal::kill(pid, sig).map_err(|errno| {
            io::Error::other(format!(
                "cannot send {sig} to {} (pid {pid}): {errno}",
                self.spec.name
            ))
        })?;
        if pause {
            self.wait_all_threads_stopped(pid)?;
        }
        Ok(())
    }

    /// Polls `/proc/<pid>/task/*/stat` until every thread's state is `T`
    /// (stopped), at most [`STOP_TIMEOUT`]. Blocks the calling thread, for
    /// a few milliseconds at most in practice.
    fn wait_all_threads_stopped(&self, pid: Pid) -> io::Result<()> {
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        let tasks = PathBuf::from(format!("/proc/{pid}/task"));
        if !tasks.is_dir() {
            // No procfs (not Linux): the signal is all there is to go on.
            return Ok(());
        }
        loop {
            let all_stopped = fs::read_dir(&tasks)?.all(|task| {
                task.ok()
                    .and_then(|task| fs::read_to_string(task.path().join("stat")).ok())
                    .is_some_and(|stat| thread_state(&stat) == Some('T'))
            });
            if all_stopped {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} (pid {pid}) was sent SIGSTOP but did not stop within {STOP_TIMEOUT:?}",
                        self.spec.name
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGKILL, wait for the exit, wait until the port is closed.
    pub(crate) async fn kill(&mut self) -> io::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        child
            .kill()
            .map_err(|e| context(&e, &format!("cannot send SIGKILL to {}", self.spec.name)))?;
        if !self.wait_exit(STOP_TIMEOUT).await? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} did not exit after SIGKILL", self.spec.name),
            ));
        }
        self.wait_port_closed().await
    }

    /// Starts the stopped broker again on the same port with the same files.
    pub(crate) async fn start_again(&mut self) -> io::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} is still running on port {} (stop or kill it first)",
                        self.spec.name, self.port
                    ),
                ));
            }
            self.child = None;
        }
        // The port may be held briefly by someone else (another test probing
        // for a free port, a client socket): retry on the same port.
        let mut last_error = None;
        for attempt in 0..PORT_ATTEMPTS {
            if attempt > 0 {
                sleep(Duration::from_millis(200)).await;
            }
            match self.start().await {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| io::Error::other(format!("{} did not start again", self.spec.name))))
    }

    /// Spawns the broker and waits until it accepts connections.
    ///
    /// Ready means: the process is alive, its log of this run says it has
    /// started up ([`ProcessSpec::started_up`]), and a TCP connection to the
    /// port succeeds. A connection alone is not enough, since while the broker
    /// fails to bind the port whoever holds it accepts the probe.
    ///
    /// A broker that exits because its port is taken gives
    /// [`io::ErrorKind::AddrInUse`].
    pub(crate) async fn start(&mut self) -> io::Result<()> {
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.stderr_path)
            .map_err(|e| {
                context(
                    &e,
                    &format!("cannot open {}", self.spec.stderr_path.display()),
                )
            })?;
        let log_start = fs::metadata(&self.spec.log_path).map_or(0, |meta| meta.len());
        let stderr_start = fs::metadata(&self.spec.stderr_path).map_or(0, |meta| meta.len());
        let child = Command::new(&self.spec.binary)
            .args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(name, value)| (name, value)))
            .stdin(if self.spec.stdin_pipe {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| context(&e, &format!("cannot run {}", self.spec.binary.display())))?;
        self.child = Some(child);

        let addr = loopback(self.port);
        let started = Instant::now();
        let deadline = started + self.spec.ready_timeout;
        loop {
            if let Some(status) = self.try_reap()? {
                let this_run = format!(
                    "{}{}",
                    read_from(&self.spec.log_path, log_start),
                    read_from(&self.spec.stderr_path, stderr_start)
                );
                let kind = if this_run
                    .to_ascii_lowercase()
                    .contains("address already in use")
                {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(
                    kind,
                    format!(
                        "{} exited during startup on {HOST}:{} ({status}){}",
                        self.spec.name,
                        self.port,
                        self.diagnostics()
                    ),
                ));
            }
            let log = read_from(&self.spec.log_path, log_start);
            if (self.spec.started_up)(&log, started.elapsed())
                && can_connect(addr).await
                && self.try_reap()?.is_none()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill_now();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not accept connections on {HOST}:{} within {:?}{}",
                        self.spec.name,
                        self.port,
                        self.spec.ready_timeout,
                        self.diagnostics()
                    ),
                ));
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// The pid of the running child, `None` when there is none.
    fn running_pid(&self) -> io::Result<Option<Pid>> {
        let Some(child) = self.child.as_ref() else {
            return Ok(None);
        };
        let pid = i32::try_from(child.id())
            .map_err(|_| io::Error::other(format!("pid {} out of range", child.id())))?;
        Ok(Some(Pid::from_raw(pid)))
    }

    /// Reaps the child if it has exited.
    fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Polls until the child exited (and was reaped) or `timeout` passed;
    /// `false` on timeout.
    async fn wait_exit(&mut self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.is_none() || self.try_reap()?.is_some() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            sleep(Duration::from_millis(5)).await;
        }
    }

    async fn wait_port_closed(&self) -> io::Result<()> {
        let addr = loopback(self.port);
        let deadline = Instant::now() + READY_TIMEOUT;
        while can_connect(addr).await {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{addr} still accepts connections after {} exited",
                        self.spec.name
                    ),
                ));
            }
            sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// SIGKILL and reap, blocking; for `Drop` and error paths.
    pub(crate) fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The end of the log and stderr, for error messages.
    pub(crate) fn diagnostics(&self) -> String {
        let mut out = String::new();
        let log = self.log();
        let stderr = read_from(&self.spec.stderr_path, 0);
        for (stream, text) in [("log", log), ("stderr", stderr)] {
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                continue;
            }
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            let _ = write!(
                out,
                "\n--- {} {stream} ---\n{}",
                self.spec.name,
                tail.join("\n")
            );
        }
        out
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// The state letter of a `/proc/.../stat` line: the field after the command
/// name, which is in parentheses and may itself contain spaces or parentheses.
fn thread_state(stat: &str) -> Option<char> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.trim_start().chars().next()
}

/// The text of `path` from byte `offset` on (empty if unreadable).
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let read = File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(offset))?;
        file.read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

/// `error` with `what` in front of its message, keeping its kind.
pub(crate) fn context(error: &io::Error, what: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

/// A file `name` in `dir`, written with `contents`.
pub(crate) fn write_file(dir: &Path, name: &str, contents: &str) -> io::Result<PathBuf> {
    let path = dir.join(name);
    fs::write(&path, contents)
        .map_err(|e| context(&e, &format!("cannot write {}", path.display())))?;
    Ok(path)
}

/// A private temporary directory `<prefix>…`.
pub(crate) fn temp_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| context(&e, "cannot create a temporary directory for a test broker"))
}

/// Prepares (`prepare(port)`: config files, then the process) and starts a
/// broker on a free port, retrying on a new port when the chosen one was
/// taken in the meantime.
pub(crate) async fn start_on_free_port(
    name: &str,
    mut prepare: impl FnMut(u16) -> io::Result<BrokerProcess>,
) -> io::Result<BrokerProcess> {
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let mut process = prepare(crate::free_port()?)?;
        match process.start().await {
            Ok(()) => return Ok(process),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other(format!("{name} did not start"))))
}

/// Test helper: `config` has each of `expected` as a whole line.
#[cfg(test)]
pub(crate) fn assert_config_lines(config: &str, expected: &[&str]) {
    for line in expected {
        assert!(
            config.lines().any(|l| l == *line),
            "missing {line:?} in:\n{config}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_state_is_the_field_after_the_command_name() {
        assert_eq!(thread_state("42 (nats-server) T 1 42 42 0"), Some('T'));
        assert_eq!(thread_state("42 (a) (b) S 1 42"), Some('S'));
        assert_eq!(thread_state("garbage"), None);
    }
}
