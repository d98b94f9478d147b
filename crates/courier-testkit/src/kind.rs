//! Choosing the test broker: Mosquitto, the embedded broker, NATS or RabbitMQ.

use std::env;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The environment variable that selects the broker: `mosquitto`, `embedded`,
/// `nats` or `rabbitmq`.
pub(crate) const BROKER_ENV: &str = "COURIER_TEST_BROKER";

/// Directories searched for broker binaries after `PATH` (sbin is often
/// not on a normal user's `PATH`).
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"];

/// Which broker backs a [`TestBroker`](crate::TestBroker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// A real `mosquitto` child process; supports stop, kill and restart.
    Mosquitto,
    /// An in-process rumqttd broker; cannot be stopped or restarted.
    Embedded,
    /// A real `nats-server` child process with JetStream and its MQTT
    /// listener; supports stop, kill and restart.
    Nats,
    /// A RabbitMQ node with the `rabbitmq_mqtt` and `rabbitmq_web_mqtt`
    /// plugins, one per test process, shared by its tests (it takes seconds to
    /// boot); cannot be stopped or restarted.
    RabbitMq,
}

impl BrokerKind {
    /// The broker kind chosen by the environment.
    ///
    /// `COURIER_TEST_BROKER=mosquitto|embedded|nats|rabbitmq`
    /// (case-insensitive) selects the kind. When it is unset or empty: [`BrokerKind::Mosquitto`] if a
    /// `mosquitto` binary is found (on `PATH`, in `/usr/sbin` or
    /// `/usr/local/sbin`), else [`BrokerKind::Embedded`].
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when `mosquitto` is asked for but not
    /// installed (no silent fallback), [`io::ErrorKind::InvalidInput`] for
    /// any other value of the variable.
    pub fn from_env() -> io::Result<BrokerKind> {
        let value = match env::var(BROKER_ENV) {
            Ok(value) => Some(value),
            Err(env::VarError::NotPresent) => None,
            Err(env::VarError::NotUnicode(raw)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{BROKER_ENV}={raw:?} is not valid UTF-8"),
                ));
            }
        };
        choose(value.as_deref(), find_mosquitto().is_some())
    }
}

/// The decision of [`BrokerKind::from_env`], without touching the environment.
fn choose(value: Option<&str>, mosquitto_found: bool) -> io::Result<BrokerKind> {
    let value = value.map(str::trim).unwrap_or_default();
    match value.to_ascii_lowercase().as_str() {
        "" if mosquitto_found => Ok(BrokerKind::Mosquitto),
        "" => Ok(BrokerKind::Embedded),
        "mosquitto" if mosquitto_found => Ok(BrokerKind::Mosquitto),
        "mosquitto" => Err(mosquitto_missing()),
        "embedded" | "rumqttd" => Ok(BrokerKind::Embedded),
        "nats" => Ok(BrokerKind::Nats),
        "rabbitmq" => Ok(BrokerKind::RabbitMq),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{BROKER_ENV}={value:?}: expected `mosquitto`, `embedded`, `nats` or `rabbitmq`"
            ),
        )),
    }
}

/// The error for "Mosquitto was asked for but is not installed".
pub(crate) fn mosquitto_missing() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "a Mosquitto broker was asked for but no `mosquitto` binary was found \
             on PATH or in /usr/sbin, /usr/local/sbin (install the `mosquitto` package, \
             or set {BROKER_ENV}=embedded)"
        ),
    )
}

/// The path of the `mosquitto` binary, if installed.
pub(crate) fn find_mosquitto() -> Option<PathBuf> {
    find_binary("mosquitto")
}

/// The path of the `mosquitto_passwd` binary, if installed.
pub(crate) fn find_mosquitto_passwd() -> Option<PathBuf> {
    find_binary("mosquitto_passwd")
}

/// The path of the `nats-server` binary.
///
/// # Errors
///
/// [`io::ErrorKind::NotFound`] when it is not installed.
pub(crate) fn find_nats_server() -> io::Result<PathBuf> {
    find_binary("nats-server").ok_or_else(|| missing("NATS", "nats-server", "nats-server"))
}

/// The script that starts a RabbitMQ node in the foreground as the current
/// user. Debian's `/usr/sbin/rabbitmq-server` is a wrapper that switches to the
/// `rabbitmq` user (dropping the environment a private node is configured
/// with): its target's sibling `rabbitmq-server` is the real script.
///
/// # Errors
///
/// [`io::ErrorKind::NotFound`] when RabbitMQ is not installed.
pub(crate) fn find_rabbitmq_server() -> io::Result<PathBuf> {
    let found = find_binary("rabbitmq-server")
        .ok_or_else(|| missing("RabbitMQ", "rabbitmq-server", "rabbitmq-server"))?;
    let resolved = fs::canonicalize(&found).unwrap_or(found);
    if resolved
        .file_name()
        .is_some_and(|name| name == "rabbitmq-script-wrapper")
    {
        if let Some(real) = resolved.parent().map(|dir| dir.join("rabbitmq-server")) {
            if is_executable(&real) {
                return Ok(real);
            }
        }
    }
    Ok(resolved)
}

/// The error for "`broker` was asked for but `binary` is not installed".
fn missing(broker: &str, binary: &str, package: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "a {broker} broker was asked for but no `{binary}` binary was found on PATH \
             or in /usr/sbin, /usr/local/sbin (install the `{package}` package)"
        ),
    )
}

/// Searches `PATH`, then [`EXTRA_DIRS`], for an executable file `name`.
fn find_binary(name: &str) -> Option<PathBuf> {
    let path_dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_prefers_mosquitto_when_installed() -> io::Result<()> {
        assert_eq!(choose(None, true)?, BrokerKind::Mosquitto);
        assert_eq!(choose(None, false)?, BrokerKind::Embedded);
        assert_eq!(choose(Some("  "), false)?, BrokerKind::Embedded);
        Ok(())
    }

    #[test]
    fn explicit_values() -> io::Result<()> {
        assert_eq!(choose(Some("Mosquitto"), true)?, BrokerKind::Mosquitto);
        assert_eq!(choose(Some("embedded"), true)?, BrokerKind::Embedded);
        assert_eq!(choose(Some("EMBEDDED"), false)?, BrokerKind::Embedded);
        assert_eq!(choose(Some("nats"), true)?, BrokerKind::Nats);
        assert_eq!(choose(Some("RabbitMQ"), true)?, BrokerKind::RabbitMq);
        Ok(())
    }

    #[test]
    fn mosquitto_requested_but_missing_is_an_error() {
        let err = choose(Some("mosquitto"), false).err();
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::NotFound));
    }

    #[test]
    fn unknown_value_is_an_error() {
        let err = choose(Some("hivemq"), true).err();
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
    }
}
