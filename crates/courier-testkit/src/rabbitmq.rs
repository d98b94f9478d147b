//! A private RabbitMQ node with the MQTT and Web MQTT plugins, started once per
//! test process and shared by its tests: an Erlang node takes seconds to boot.
//!
//! The node has its own name, ports, mnesia and log directories, enabled-plugins
//! file and config in a temporary directory; the system RabbitMQ is not touched.
//! It runs under a small watchdog script holding a pipe to this process: when
//! the test process exits (however it exits), the watchdog reads EOF, kills the
//! node by the pid in its pid file and removes the directory.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::kind::find_rabbitmq_server;
use crate::process::{BrokerProcess, ProcessSpec, temp_dir, write_file};
use crate::{HOST, PORT_ATTEMPTS, free_port};

/// How long the node may take to boot (an Erlang VM, the plugins, a Raft
/// election for MQTT client ids), on a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts the node in the background and, at EOF on stdin (the test process
/// is gone), kills it and removes its directory. `$0`: the `rabbitmq-server`
/// script, `$1`: the node's directory.
const WATCHDOG: &str = r#"exec 3<&0
"$0" </dev/null >"$1/startup.log" 2>&1 3<&- &
server=$!
{
  read -r _ <&3
  kill -KILL "$(cat "$1/rabbitmq.pid" 2>/dev/null)" "$server" 2>/dev/null
  sleep 1
  rm -rf "$1"
} &
wait "$server"
"#;

/// The node shared by the tests of this process.
static NODE: OnceCell<RabbitMq> = OnceCell::const_new();

/// The shared RabbitMQ node.
#[derive(Debug)]
pub(crate) struct RabbitMq {
    process: BrokerProcess,
    web_mqtt_port: u16,
}

impl RabbitMq {
    /// The node of this test process, started by the first caller.
    pub(crate) async fn shared() -> io::Result<&'static RabbitMq> {
        NODE.get_or_try_init(RabbitMq::start).await
    }

    async fn start() -> io::Result<RabbitMq> {
        let script = find_rabbitmq_server()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            // The watchdog removes the directory when the test process exits.
            let dir = temp_dir("courier-testkit-rabbitmq-")?.keep();
            let ports = NodePorts::free()?;
            let mut process = BrokerProcess::new(node_spec(&script, &dir, &ports)?, ports.mqtt);
            match process.start().await {
                Ok(()) => {
                    return Ok(RabbitMq {
                        process,
                        web_mqtt_port: ports.web_mqtt,
                    });
                }
                Err(e) => last_error = Some(e),
            }
            // A port taken meanwhile shows only in the node's log: try new ports.
            if !process.log().contains("eaddrinuse") {
                break;
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("RabbitMQ did not start")))
    }

    pub(crate) fn port(&self) -> u16 {
        self.process.port()
    }

    pub(crate) fn web_mqtt_port(&self) -> u16 {
        self.web_mqtt_port
    }

    pub(crate) fn log(&self) -> String {
        self.process.log()
    }
}

/// The node's four ports.
#[derive(Debug)]
struct NodePorts {
    amqp: u16,
    dist: u16,
    mqtt: u16,
    web_mqtt: u16,
}

impl NodePorts {
    fn free() -> io::Result<NodePorts> {
        Ok(NodePorts {
            amqp: free_port()?,
            dist: free_port()?,
            mqtt: free_port()?,
            web_mqtt: free_port()?,
        })
    }
}

/// Writes the node's config files into `dir` and says how to run it.
fn node_spec(script: &Path, dir: &Path, ports: &NodePorts) -> io::Result<ProcessSpec> {
    let config = write_file(dir, "rabbitmq.conf", &render_config(ports))?;
    let plugins = write_file(
        dir,
        "enabled_plugins",
        "[rabbitmq_mqtt,rabbitmq_web_mqtt].\n",
    )?;
    // An empty env file instead of the system's /etc/rabbitmq/rabbitmq-env.conf.
    let env_file = write_file(dir, "rabbitmq-env.conf", "")?;
    let log_path = dir.join("rabbit.log");
    let env = [
        ("HOME", dir.to_path_buf()),
        ("RABBITMQ_CONF_ENV_FILE", env_file),
        ("RABBITMQ_CONFIG_FILE", config),
        ("RABBITMQ_ENABLED_PLUGINS_FILE", plugins),
        ("RABBITMQ_MNESIA_BASE", dir.join("mnesia")),
        ("RABBITMQ_LOG_BASE", dir.join("log")),
        ("RABBITMQ_LOGS", log_path.clone()),
        ("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid")),
    ];
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .map(|(name, path)| (name.to_owned(), path.display().to_string()))
        .collect();
    env.extend([
        (
            "RABBITMQ_NODENAME".to_owned(),
            format!("courier-testkit-{}@localhost", ports.mqtt),
        ),
        ("RABBITMQ_NODE_IP_ADDRESS".to_owned(), HOST.to_owned()),
        ("RABBITMQ_NODE_PORT".to_owned(), ports.amqp.to_string()),
        ("RABBITMQ_DIST_PORT".to_owned(), ports.dist.to_string()),
    ]);
    Ok(ProcessSpec {
        name: "RabbitMQ",
        binary: "sh".into(),
        args: vec![
            "-c".to_owned(),
            WATCHDOG.to_owned(),
            script.display().to_string(),
            dir.display().to_string(),
        ],
        env,
        log_path,
        stderr_path: dir.join("startup.stderr"),
        started_up,
        ready_timeout: BOOT_TIMEOUT,
        stdin_pipe: true,
    })
}

/// RabbitMQ logs `Server startup complete` once the plugins' listeners are up.
fn started_up(log: &str, _elapsed: Duration) -> bool {
    log.contains("Server startup complete")
}

/// The node's `rabbitmq.conf`: every listener on loopback, the guest user
/// allowed there (MQTT clients without credentials connect as guest).
fn render_config(ports: &NodePorts) -> String {
    format!(
        "# Generated by courier-testkit\n\
         listeners.tcp.default = {HOST}:{amqp}\n\
         mqtt.listeners.tcp.default = {HOST}:{mqtt}\n\
         mqtt.allow_anonymous = true\n\
         web_mqtt.tcp.ip = {HOST}\n\
         web_mqtt.tcp.port = {web_mqtt}\n\
         loopback_users.guest = true\n",
        amqp = ports.amqp,
        mqtt = ports.mqtt,
        web_mqtt = ports.web_mqtt,
    )
}
