//! A cluster of NATS servers: routes between every node, JetStream with
//! replicated MQTT streams, an MQTT listener on each node.

use std::io;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::kind::find_nats_server;
use crate::nats::spec;
use crate::process::{BrokerProcess, context, temp_dir, write_file};
use crate::{HOST, POLL_INTERVAL, PORT_ATTEMPTS, free_port, loopback, mqtt};

/// How long a cluster may take until every node accepts MQTT clients (a
/// JetStream meta leader elected, the MQTT streams created and replicated).
const FORMING_TIMEOUT: Duration = Duration::from_secs(60);

/// The NATS cluster's name in its configs.
const CLUSTER_NAME: &str = "courier-testkit";

/// A NATS cluster of child processes on loopback, for tests of clients that
/// fail over between brokers.
///
/// Every node has a route to every other, JetStream with its own store, and an
/// MQTT listener; the MQTT streams are replicated on up to three nodes
/// (`mqtt { stream_replicas }`), so a QoS 1 PUBLISH is acknowledged once a
/// majority of them stored it. A node can be stopped, killed and started
/// again on the same ports with its store. Dropping the cluster kills every
/// node and removes the directory.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<BrokerProcess>,
    // Last, so the files are removed after the processes are gone.
    _dir: TempDir,
}

/// The ports of one node.
#[derive(Debug, Clone, Copy)]
struct NodePorts {
    mqtt: u16,
    route: u16,
}

impl NatsCluster {
    /// Starts `size` nodes (at least 1) and waits until each accepts an MQTT
    /// connection.
    ///
    /// # Errors
    ///
    /// `nats-server` not installed ([`io::ErrorKind::NotFound`]); `size` 0
    /// ([`io::ErrorKind::InvalidInput`]); a node that exits or does not start;
    /// a cluster whose nodes do not all accept MQTT clients within 60 s
    /// ([`io::ErrorKind::TimedOut`], with the end of each node's log).
    ///
    /// # Cancel safety
    ///
    /// Cancelling kills the nodes started so far.
    pub async fn start(size: usize) -> io::Result<NatsCluster> {
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a NATS cluster needs at least one node",
            ));
        }
        let binary = find_nats_server()?;
        // A port found free can be taken before a node binds it (by a connection's
        // ephemeral port, say): start the whole cluster again on other ports.
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match NatsCluster::start_on_free_ports(size, &binary).await {
                Ok(cluster) => return Ok(cluster),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("the NATS cluster did not start")))
    }

    /// One attempt of [`start`](Self::start): `size` nodes on ports free a moment ago.
    async fn start_on_free_ports(size: usize, binary: &Path) -> io::Result<NatsCluster> {
        let dir = temp_dir("courier-testkit-nats-cluster-")?;
        let ports = (0..size)
            .map(|_| {
                Ok(NodePorts {
                    mqtt: free_port()?,
                    route: free_port()?,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut nodes = Vec::with_capacity(size);
        for (index, own) in ports.iter().enumerate() {
            let node_dir = dir.path().join(format!("node{index}"));
            std::fs::create_dir(&node_dir)
                .map_err(|e| context(&e, &format!("cannot create {}", node_dir.display())))?;
            let config = render_config(index, &ports, &node_dir);
            let config_path = write_file(&node_dir, "nats.conf", &config)?;
            nodes.push(BrokerProcess::new(
                spec(binary.to_path_buf(), &config_path, &node_dir),
                own.mqtt,
            ));
        }
        let mut cluster = NatsCluster { nodes, _dir: dir };
        for node in &mut cluster.nodes {
            node.start().await?;
        }
        for index in 0..size {
            cluster.wait_serving(index).await?;
        }
        Ok(cluster)
    }

    /// The number of nodes.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The host every node listens on: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The MQTT ports of the nodes, in node order (the same across restarts).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(BrokerProcess::port).collect()
    }

    /// Kills node `index` (SIGKILL), waits until it exited and its MQTT port is
    /// closed. Killing a stopped node does nothing.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for an index out of range; a node that
    /// does not exit.
    ///
    /// # Cancel safety
    ///
    /// The node is killed once the signal is sent; cancelling only stops the wait.
    pub async fn kill(&mut self, index: usize) -> io::Result<()> {
        self.node(index)?.kill().await
    }

    /// Stops node `index` gracefully (SIGTERM: NATS hands off its leaderships)
    /// and waits until it exited.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for an index out of range; a node that
    /// does not exit within 10 s (it is then killed).
    ///
    /// # Cancel safety
    ///
    /// Cancelling stops the wait; the node may still be shutting down.
    pub async fn stop(&mut self, index: usize) -> io::Result<()> {
        self.node(index)?.stop().await
    }

    /// Starts node `index` again on its ports with its store, and waits until
    /// it accepts MQTT clients.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for an index out of range;
    /// [`io::ErrorKind::AlreadyExists`] if it is running; a node that does not
    /// start or serve within 60 s.
    ///
    /// # Cancel safety
    ///
    /// Cancelling while the node starts kills it.
    pub async fn start_again(&mut self, index: usize) -> io::Result<()> {
        self.node(index)?.start_again().await?;
        self.wait_serving(index).await
    }

    /// Node `index`'s log so far (empty for an index out of range).
    pub fn log(&self, index: usize) -> String {
        self.nodes
            .get(index)
            .map(BrokerProcess::log)
            .unwrap_or_default()
    }

    fn node(&mut self, index: usize) -> io::Result<&mut BrokerProcess> {
        let size = self.nodes.len();
        self.nodes.get_mut(index).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no node {index} in a NATS cluster of {size}"),
            )
        })
    }

    /// Waits until node `index` answers an MQTT CONNECT with "accepted".
    async fn wait_serving(&self, index: usize) -> io::Result<()> {
        let port = self.nodes.get(index).map_or(0, BrokerProcess::port);
        let deadline = Instant::now() + FORMING_TIMEOUT;
        loop {
            if let Ok(Ok(true)) = timeout(Duration::from_secs(2), accepts_mqtt(port)).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs: String = self.nodes.iter().map(BrokerProcess::diagnostics).collect();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "NATS cluster node {index} on {HOST}:{port} did not accept MQTT clients \
                         within {FORMING_TIMEOUT:?}{logs}"
                    ),
                ));
            }
            sleep(POLL_INTERVAL * 10).await;
        }
    }
}

/// Whether the broker on `port` accepts an MQTT 3.1.1 CONNECT (clean session)
/// with return code 0.
async fn accepts_mqtt(port: u16) -> io::Result<bool> {
    let mut stream = TcpStream::connect(loopback(port)).await?;
    let client_id = b"courier-testkit-probe";
    let mut body = vec![0, 4];
    body.extend_from_slice(b"MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 10]);
    body.extend_from_slice(
        &u16::try_from(client_id.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    body.extend_from_slice(client_id);
    stream
        .write_all(&mqtt::Packet::new(mqtt::CONNECT << 4, body).encode())
        .await?;
    let connack = mqtt::read_packet(&mut stream).await?;
    let accepted = connack.kind() == mqtt::CONNACK && connack.body.get(1) == Some(&0);
    if accepted {
        stream.write_all(&[0xe0, 0x00]).await?;
    }
    Ok(accepted)
}

/// The config of node `index`: routes to every other node, JetStream, MQTT
/// with streams replicated on up to three nodes.
fn render_config(index: usize, ports: &[NodePorts], dir: &Path) -> String {
    let own = ports[index];
    let routes: Vec<String> = ports
        .iter()
        .enumerate()
        .filter(|(other, _)| *other != index)
        .map(|(_, p)| format!("\"nats-route://{HOST}:{}\"", p.route))
        .collect();
    let replicas = ports.len().min(3);
    format!(
        "# Generated by courier-testkit\n\
         server_name: {CLUSTER_NAME}-{index}-{mqtt}\n\
         listen: {HOST}:-1\n\
         log_file: \"{log}\"\n\
         jetstream {{ store_dir: \"{store}\" }}\n\
         mqtt {{ listen: \"{HOST}:{mqtt}\", stream_replicas: {replicas} }}\n\
         cluster {{\n  name: {CLUSTER_NAME}\n  listen: \"{HOST}:{route}\"\n  routes: [{routes}]\n}}\n",
        mqtt = own.mqtt,
        route = own.route,
        log = dir.join("nats.log").display(),
        store = dir.join("jetstream").display(),
        routes = routes.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_routes_to_every_other_and_replicates_mqtt_streams() {
        let ports = [
            NodePorts { mqtt: 1, route: 11 },
            NodePorts { mqtt: 2, route: 12 },
            NodePorts { mqtt: 3, route: 13 },
        ];
        let config = render_config(1, &ports, Path::new("/tmp/n1"));
        crate::process::assert_config_lines(
            &config,
            &[
                "server_name: courier-testkit-1-2",
                "mqtt { listen: \"127.0.0.1:2\", stream_replicas: 3 }",
                "  listen: \"127.0.0.1:12\"",
                "  routes: [\"nats-route://127.0.0.1:11\", \"nats-route://127.0.0.1:13\"]",
                "jetstream { store_dir: \"/tmp/n1/jetstream\" }",
            ],
        );
    }
}
