//! A Mosquitto child process with a generated config in a temporary directory.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::time::{Instant, sleep};

use crate::kind::{find_mosquitto, find_mosquitto_passwd, mosquitto_missing};
use crate::{
    BrokerOptions, HOST, POLL_INTERVAL, PORT_ATTEMPTS, READY_TIMEOUT, can_connect, free_port,
    loopback,
};

/// How long a graceful stop may take before the broker is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a Mosquitto whose log never says `running` (versions before 2.0,
/// or a config that logs elsewhere) must be up before it counts as ready.
const NO_MARKER_GRACE: Duration = Duration::from_secs(1);

/// How much of the log goes into an error message.
const LOG_TAIL_LINES: usize = 40;

/// A Mosquitto broker process and its files.
#[derive(Debug)]
pub(crate) struct Mosquitto {
    binary: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    stderr_path: PathBuf,
    persistence_dir: Option<PathBuf>,
    unix_socket: Option<PathBuf>,
    port: u16,
    child: Option<Child>,
    // Last, so the files are removed after the process is gone.
    dir: TempDir,
}

impl Mosquitto {
    /// Writes the config and starts Mosquitto on a free port, retrying on a
    /// new port when the chosen one was taken in the meantime.
    pub(crate) async fn start(options: &BrokerOptions) -> io::Result<Mosquitto> {
        let binary = find_mosquitto().ok_or_else(mosquitto_missing)?;
        let dir = tempfile::Builder::new()
            .prefix("courier-testkit-mosquitto-")
            .tempdir()
            .map_err(|e| context(&e, "cannot create a temporary directory for Mosquitto"))?;
        let persistence_dir = if options.persistence {
            let persist = dir.path().join("persistence");
            fs::create_dir(&persist).map_err(|e| {
                context(
                    &e,
                    &format!("cannot create persistence dir {}", persist.display()),
                )
            })?;
            Some(persist)
        } else {
            None
        };
        let password_file = match &options.credentials {
            Some((username, password)) => {
                Some(make_password_file(dir.path(), username, password).await?)
            }
            None => None,
        };

        let mut broker = Mosquitto {
            binary,
            config_path: dir.path().join("mosquitto.conf"),
            log_path: dir.path().join("mosquitto.log"),
            stderr_path: dir.path().join("mosquitto.stderr"),
            persistence_dir,
            unix_socket: options
                .unix_socket
                .then(|| dir.path().join("mosquitto.sock")),
            port: 0,
            child: None,
            dir,
        };

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            broker.port = free_port()?;
            let config = render_config(
                options,
                broker.port,
                broker.dir.path(),
                broker.persistence_dir.as_deref(),
                password_file.as_deref(),
                broker.unix_socket.as_deref(),
            );
            fs::write(&broker.config_path, config).map_err(|e| {
                context(
                    &e,
                    &format!("cannot write {}", broker.config_path.display()),
                )
            })?;
            match broker.spawn_and_wait_ready().await {
                Ok(()) => return Ok(broker),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("Mosquitto did not start")))
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn unix_socket(&self) -> Option<&Path> {
        self.unix_socket.as_deref()
    }

    pub(crate) fn persistence_dir(&self) -> Option<&Path> {
        self.persistence_dir.as_deref()
    }

    /// The log file so far (empty if it cannot be read).
    pub(crate) fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// SIGTERM, wait for the exit, wait until the port is closed.
    pub(crate) async fn stop(&mut self) -> io::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let pid = i32::try_from(child.id())
            .map_err(|_| io::Error::other(format!("pid {} out of range", child.id())))?;
        match signal::kill(Pid::from_raw(pid), Signal::SIGTERM) {
            // ESRCH: it already exited and only needs reaping.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(errno) => {
                return Err(io::Error::other(format!(
                    "cannot send SIGTERM to Mosquitto (pid {pid}): {errno}"
                )));
            }
        }
        if !self.wait_exit(STOP_TIMEOUT).await? {
            self.kill_now();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "Mosquitto (pid {pid}) did not exit within {STOP_TIMEOUT:?} of SIGTERM \
                     and was killed{}",
                    self.diagnostics()
                ),
            ));
        }
        self.wait_port_closed().await
    }

    /// SIGSTOP (`pause = true`) or SIGCONT: freeze the process with its sockets open,
    /// so clients stay connected but get no answer.
    pub(crate) fn freeze(&mut self, pause: bool) -> io::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "Mosquitto is not running",
            ));
        };
        let pid = i32::try_from(child.id())
            .map_err(|_| io::Error::other(format!("pid {} out of range", child.id())))?;
        let sig = if pause {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        signal::kill(Pid::from_raw(pid), sig).map_err(|errno| {
            io::Error::other(format!(
                "cannot send {sig} to Mosquitto (pid {pid}): {errno}"
            ))
        })
    }

    /// SIGKILL, wait for the exit, wait until the port is closed.
    pub(crate) async fn kill(&mut self) -> io::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        child
            .kill()
            .map_err(|e| context(&e, "cannot send SIGKILL to Mosquitto"))?;
        if !self.wait_exit(STOP_TIMEOUT).await? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "Mosquitto did not exit after SIGKILL",
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
                        "Mosquitto is still running on port {} (stop or kill it first)",
                        self.port
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
            match self.spawn_and_wait_ready().await {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("Mosquitto did not start again")))
    }

    /// Spawns `mosquitto -c <config>` and waits until it accepts connections.
    ///
    /// Ready means: the process is alive, its log of this run says it is
    /// `running` (Mosquitto 2.x), and a TCP connection to the port succeeds.
    /// A connection alone is not enough, since while Mosquitto fails to bind
    /// the port whoever holds it accepts the probe. Versions without the
    /// `running` line are taken as ready after [`NO_MARKER_GRACE`] alive,
    /// connectable and without an `Error` in the log.
    ///
    /// A broker that exits because its port is taken gives
    /// [`io::ErrorKind::AddrInUse`].
    async fn spawn_and_wait_ready(&mut self) -> io::Result<()> {
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .map_err(|e| context(&e, &format!("cannot open {}", self.stderr_path.display())))?;
        let log_start = fs::metadata(&self.log_path).map_or(0, |meta| meta.len());
        let stderr_start = fs::metadata(&self.stderr_path).map_or(0, |meta| meta.len());
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| context(&e, &format!("cannot run {}", self.binary.display())))?;
        self.child = Some(child);

        let addr = loopback(self.port);
        let started = Instant::now();
        let deadline = started + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_reap()? {
                let this_run = format!(
                    "{}{}",
                    read_from(&self.log_path, log_start),
                    read_from(&self.stderr_path, stderr_start)
                );
                let kind = if this_run.contains("Address already in use") {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(
                    kind,
                    format!(
                        "Mosquitto exited during startup on {HOST}:{} ({status}){}",
                        self.port,
                        self.diagnostics()
                    ),
                ));
            }
            let log = read_from(&self.log_path, log_start);
            let started_up = log.lines().any(|line| line.ends_with(" running"))
                || (started.elapsed() >= NO_MARKER_GRACE && !log.contains("Error"));
            if started_up && can_connect(addr).await && self.try_reap()?.is_none() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill_now();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "Mosquitto did not accept connections on {HOST}:{} within \
                         {READY_TIMEOUT:?}{}",
                        self.port,
                        self.diagnostics()
                    ),
                ));
            }
            sleep(POLL_INTERVAL).await;
        }
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
                    format!("{addr} still accepts connections after Mosquitto exited"),
                ));
            }
            sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// SIGKILL and reap, blocking; for `Drop` and error paths.
    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The end of the log and stderr, for error messages.
    fn diagnostics(&self) -> String {
        let mut out = String::new();
        let log = self.log();
        let stderr = fs::read(&self.stderr_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        for (name, text) in [("log", log), ("stderr", stderr)] {
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                continue;
            }
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            let _ = write!(out, "\n--- mosquitto {name} ---\n{}", tail.join("\n"));
        }
        out
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// Runs `mosquitto_passwd -b -c <dir>/passwd <username> <password>`.
async fn make_password_file(dir: &Path, username: &str, password: &str) -> io::Result<PathBuf> {
    let tool = find_mosquitto_passwd().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "credentials need `mosquitto_passwd`, which was not found on PATH \
             or in /usr/bin, /usr/sbin, /usr/local/bin, /usr/local/sbin",
        )
    })?;
    let path = dir.join("passwd");
    let output = tokio::process::Command::new(&tool)
        .arg("-b")
        .arg("-c")
        .arg(&path)
        .arg(username)
        .arg(password)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| context(&e, &format!("cannot run {}", tool.display())))?;
    if !output.status.success() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "mosquitto_passwd failed for user {username:?} ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    Ok(path)
}

/// The Mosquitto config file for `options` on `port`.
fn render_config(
    options: &BrokerOptions,
    port: u16,
    dir: &Path,
    persistence_dir: Option<&Path>,
    password_file: Option<&Path>,
    unix_socket: Option<&Path>,
) -> String {
    let mut lines = vec![
        "# Generated by courier-testkit".to_owned(),
        format!("listener {port} {HOST}"),
    ];
    if let Some(path) = unix_socket {
        lines.push(format!("listener 0 {}", path.display()));
    }
    match password_file {
        Some(path) => {
            lines.push("allow_anonymous false".to_owned());
            lines.push(format!("password_file {}", path.display()));
        }
        None => lines.push("allow_anonymous true".to_owned()),
    }
    match persistence_dir {
        Some(path) => {
            lines.push("persistence true".to_owned());
            // Mosquitto appends the file name to this verbatim: keep the slash.
            lines.push(format!("persistence_location {}/", path.display()));
        }
        None => lines.push("persistence false".to_owned()),
    }
    if let Some(n) = options.max_inflight_messages {
        lines.push(format!("max_inflight_messages {n}"));
    }
    if let Some(n) = options.max_queued_messages {
        lines.push(format!("max_queued_messages {n}"));
    }
    if let Some(n) = options.message_size_limit {
        lines.push(format!("message_size_limit {n}"));
    }
    lines.push(format!(
        "log_dest file {}",
        dir.join("mosquitto.log").display()
    ));
    lines.push("log_type all".to_owned());
    if nix::unistd::geteuid().is_root() {
        // Started as root, Mosquitto 2 switches to the `mosquitto` user, which
        // could not write the log or persistence files in our private
        // directory; `user root` keeps it as root.
        lines.push("user root".to_owned());
    }
    lines.extend(options.config_lines.iter().cloned());
    let mut config = lines.join("\n");
    config.push('\n');
    config
}

/// The text of `path` from byte `offset` on (empty if unreadable).
fn read_from(path: &Path, offset: u64) -> String {
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

fn context(error: &io::Error, what: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_requested_lines() {
        let options = BrokerOptions::new()
            .persistence(true)
            .message_size_limit(1000)
            .max_inflight_messages(7)
            .max_queued_messages(9)
            .config_line("retain_available true");
        let config = render_config(
            &options,
            4321,
            Path::new("/tmp/x"),
            Some(Path::new("/tmp/x/persistence")),
            Some(Path::new("/tmp/x/passwd")),
            Some(Path::new("/tmp/x/mosquitto.sock")),
        );
        for expected in [
            "listener 4321 127.0.0.1",
            "listener 0 /tmp/x/mosquitto.sock",
            "allow_anonymous false",
            "password_file /tmp/x/passwd",
            "persistence true",
            "persistence_location /tmp/x/persistence/",
            "max_inflight_messages 7",
            "max_queued_messages 9",
            "message_size_limit 1000",
            "log_dest file /tmp/x/mosquitto.log",
            "log_type all",
            "retain_available true",
        ] {
            assert!(
                config.lines().any(|line| line == expected),
                "missing {expected:?} in:\n{config}"
            );
        }
    }
}
