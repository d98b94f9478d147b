//! A Mosquitto child process with a generated config in a temporary directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;

use crate::kind::{find_mosquitto, find_mosquitto_passwd, mosquitto_missing};
use crate::process::{
    BrokerProcess, ProcessSpec, context, start_on_free_port, temp_dir, write_file,
};
use crate::{BrokerOptions, HOST, READY_TIMEOUT};

/// How long a Mosquitto whose log never says `running` (versions before 2.0,
/// or a config that logs elsewhere) must be up before it counts as ready.
const NO_MARKER_GRACE: Duration = Duration::from_secs(1);

/// A Mosquitto broker process and its files.
#[derive(Debug)]
pub(crate) struct Mosquitto {
    process: BrokerProcess,
    persistence_dir: Option<PathBuf>,
    unix_socket: Option<PathBuf>,
    // Last, so the files are removed after the process is gone.
    _dir: TempDir,
}

impl Mosquitto {
    /// Writes the config and starts Mosquitto on a free port.
    pub(crate) async fn start(options: &BrokerOptions) -> io::Result<Mosquitto> {
        let binary = find_mosquitto().ok_or_else(mosquitto_missing)?;
        let dir = temp_dir("courier-testkit-mosquitto-")?;
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
        let unix_socket = options
            .unix_socket
            .then(|| dir.path().join("mosquitto.sock"));
        let process = start_on_free_port("Mosquitto", |port| {
            let config = render_config(
                options,
                port,
                dir.path(),
                persistence_dir.as_deref(),
                password_file.as_deref(),
                unix_socket.as_deref(),
            );
            let config_path = write_file(dir.path(), "mosquitto.conf", &config)?;
            let spec = ProcessSpec {
                name: "Mosquitto",
                binary: binary.clone(),
                args: vec!["-c".to_owned(), config_path.display().to_string()],
                log_path: dir.path().join("mosquitto.log"),
                stderr_path: dir.path().join("mosquitto.stderr"),
                started_up,
                ready_timeout: READY_TIMEOUT,
                stdin_pipe: false,
                env: Vec::new(),
            };
            Ok(BrokerProcess::new(spec, port))
        })
        .await?;
        Ok(Mosquitto {
            process,
            persistence_dir,
            unix_socket,
            _dir: dir,
        })
    }

    pub(crate) fn process(&mut self) -> &mut BrokerProcess {
        &mut self.process
    }

    pub(crate) fn process_ref(&self) -> &BrokerProcess {
        &self.process
    }

    pub(crate) fn unix_socket(&self) -> Option<&Path> {
        self.unix_socket.as_deref()
    }

    pub(crate) fn persistence_dir(&self) -> Option<&Path> {
        self.persistence_dir.as_deref()
    }
}

/// Mosquitto 2.x logs `... running`; older versions count as started after
/// [`NO_MARKER_GRACE`] without an `Error` in the log.
fn started_up(log: &str, elapsed: Duration) -> bool {
    log.lines().any(|line| line.ends_with(" running"))
        || (elapsed >= NO_MARKER_GRACE && !log.contains("Error"))
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
        crate::process::assert_config_lines(
            &config,
            &[
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
            ],
        );
    }
}
