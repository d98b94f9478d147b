//! What each test broker supports: the one table the tests consult before
//! exercising a feature some brokers lack.

use std::fmt;

use crate::BrokerKind;

/// A broker feature that some test brokers lack. Tests that need one call
/// [`BrokerKind::skip_unless`] (or [`TestBroker::skip_unless`](crate::TestBroker::skip_unless))
/// first; [`BrokerKind::supports`] is the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// [`stop`](crate::TestBroker::stop), [`kill`](crate::TestBroker::kill),
    /// [`start_again`](crate::TestBroker::start_again) and
    /// [`restart`](crate::TestBroker::restart) on the same port, for this test alone.
    Restart,
    /// [`pause`](crate::TestBroker::pause) and [`resume`](crate::TestBroker::resume)
    /// (SIGSTOP/SIGCONT): a stalled broker with its connections open.
    Freeze,
    /// A broker of its own for every start: several independent brokers in
    /// one test, and no other test's traffic (a `#` subscription sees only
    /// this test's messages).
    OwnBroker,
    /// QoS 2 granted and delivered end to end (PUBREC/PUBREL/PUBCOMP).
    Qos2,
    /// Persistent sessions (clean session off): subscriptions kept and QoS 1/2
    /// messages queued while the client is away, unacknowledged ones sent again
    /// (with their QoS 2 state) when it comes back.
    PersistentSessions,
    /// Unacknowledged QoS 1/2 messages of a persistent session are sent again
    /// as soon as the session resumes (MQTT 3.1.1 section 4.4).
    ResendOnResume,
    /// Persistent sessions (clean session off) kept and resumed across a broker
    /// restart with [`BrokerOptions::persistence`](crate::BrokerOptions::persistence),
    /// including unacknowledged outgoing QoS 1 messages.
    SessionsAcrossRestart,
    /// A broker without persistence forgets its sessions when killed or
    /// restarted: the next CONNACK says no session is present.
    SessionsLostWhenKilled,
    /// A retained message reaches a later subscription whose filter has
    /// wildcards and matches its topic.
    RetainedForWildcards,
    /// A QoS 1 message is not sent again on the connection it was sent on,
    /// however long the client takes to acknowledge it.
    NoResendWhileConnected,
    /// Keeps acknowledging QoS 1 publishes arriving on several connections,
    /// each with a deep in-flight window, while subscriptions are read.
    SteadyUnderLoad,
    /// Shared subscriptions, `$share/<group>/<filter>`, each message to one member.
    SharedSubscriptions,
    /// The MQTT 3.1.1 spec's handling of a client id already connected: the
    /// old connection is closed at once, the new one is accepted.
    ClientIdTakeover,
    /// [`BrokerOptions::credentials`](crate::BrokerOptions::credentials):
    /// a broker that refuses anonymous clients and wrong passwords.
    Credentials,
    /// [`BrokerOptions::message_size_limit`](crate::BrokerOptions::message_size_limit):
    /// a PUBLISH over the limit is acknowledged and dropped.
    MessageSizeLimit,
    /// A message is delivered at min(its publish QoS, the granted QoS), as
    /// MQTT 3.1.1 section 3.8.4 says.
    MinQosDelivery,
    /// One copy of a message per client even when several of its
    /// subscriptions match (MQTT also allows one per subscription).
    OneCopyForOverlaps,
    /// Topic names with non-ASCII UTF-8 characters routed like any other.
    NonAsciiTopics,
    /// Topic names with spaces and dots routed like any other.
    SpacesAndDotsInTopics,
    /// [`BrokerOptions::config_line`](crate::BrokerOptions::config_line): raw
    /// Mosquitto configuration (TLS listeners, ACLs, `max_qos`, ...).
    MosquittoConfig,
    /// [`BrokerOptions::unix_socket`](crate::BrokerOptions::unix_socket): a
    /// listener on a Unix domain socket beside the TCP one.
    UnixSocket,
    /// MQTT over WebSocket on a listener of the broker's own
    /// ([`TestBroker::web_mqtt_url`](crate::TestBroker::web_mqtt_url)).
    WebSocketListener,
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 22] = [
        Capability::Restart,
        Capability::Freeze,
        Capability::OwnBroker,
        Capability::Qos2,
        Capability::PersistentSessions,
        Capability::ResendOnResume,
        Capability::SessionsAcrossRestart,
        Capability::SessionsLostWhenKilled,
        Capability::RetainedForWildcards,
        Capability::NoResendWhileConnected,
        Capability::SteadyUnderLoad,
        Capability::SharedSubscriptions,
        Capability::ClientIdTakeover,
        Capability::Credentials,
        Capability::MessageSizeLimit,
        Capability::MinQosDelivery,
        Capability::OneCopyForOverlaps,
        Capability::NonAsciiTopics,
        Capability::SpacesAndDotsInTopics,
        Capability::MosquittoConfig,
        Capability::UnixSocket,
        Capability::WebSocketListener,
    ];

    /// What the capability is, for skip messages.
    pub fn description(self) -> &'static str {
        match self {
            Capability::Restart => "stop, kill and restart on the same port",
            Capability::Freeze => "freezing the broker process (SIGSTOP)",
            Capability::OwnBroker => "a broker of its own, not shared with other tests",
            Capability::Qos2 => "QoS 2 end to end",
            Capability::PersistentSessions => "persistent sessions (clean session off)",
            Capability::ResendOnResume => {
                "unacknowledged messages sent again when the session resumes"
            }
            Capability::SessionsAcrossRestart => "persistent sessions kept across a restart",
            Capability::SessionsLostWhenKilled => "sessions forgotten when the broker is killed",
            Capability::RetainedForWildcards => "retained messages for wildcard subscriptions",
            Capability::NoResendWhileConnected => {
                "no re-sending of an unacknowledged message on the same connection"
            }
            Capability::SteadyUnderLoad => "QoS 1 acknowledgements under a load of many windows",
            Capability::SharedSubscriptions => "shared subscriptions ($share/)",
            Capability::ClientIdTakeover => {
                "the spec's client-id takeover (old connection closed at once)"
            }
            Capability::Credentials => "a password file (BrokerOptions::credentials)",
            Capability::MessageSizeLimit => "a message size limit that acks and drops",
            Capability::MinQosDelivery => "delivery at min(publish QoS, granted QoS)",
            Capability::OneCopyForOverlaps => "one copy per client for overlapping subscriptions",
            Capability::NonAsciiTopics => "non-ASCII topic names",
            Capability::SpacesAndDotsInTopics => "spaces and dots in topic names",
            Capability::MosquittoConfig => "raw Mosquitto config lines (TLS, ACL, max_qos)",
            Capability::UnixSocket => "a Unix domain socket listener",
            Capability::WebSocketListener => "a WebSocket listener of its own",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl BrokerKind {
    /// Whether this broker kind supports `capability`: the capability table
    /// (the interop guide of `courier-mqtt` explains each "no").
    pub fn supports(self, capability: Capability) -> bool {
        use BrokerKind::{Embedded as E, Mosquitto as M, Nats as N, RabbitMq as R};
        use Capability as C;
        let kinds: &[BrokerKind] = match capability {
            // The RabbitMQ node is shared by the tests of a process.
            C::Restart | C::Freeze => &[M, N],
            C::OwnBroker => &[M, E, N],
            // NATS 2.9 and RabbitMQ 3.10 grant QoS 1 for a QoS 2 subscription.
            C::Qos2 => &[M, E],
            // rumqttd keeps no sessions.
            C::PersistentSessions => &[M, N, R],
            // NATS sends them again only when JetStream's ack wait (30 s) expires;
            // RabbitMQ 3.10 sends the acknowledged ones again too.
            C::ResendOnResume => &[M],
            C::SessionsAcrossRestart => &[M],
            // NATS keeps sessions in JetStream's store, which survives a SIGKILL.
            C::SessionsLostWhenKilled => &[M],
            // RabbitMQ 3.10 delivers retained messages to exact-topic filters only.
            C::RetainedForWildcards => &[M, E, N],
            // RabbitMQ 3.10 sent a QoS 1 message again, on the same connection,
            // while the client's handler held it for a second.
            C::NoResendWhileConnected => &[M, E, N],
            // rumqttd 0.20 left some publishes of multi_mode_spreads_publishes_over_every_broker
            // unacknowledged (10 s timeouts); not investigated further.
            C::SteadyUnderLoad => &[M, N, R],
            C::SharedSubscriptions => &[M, E],
            C::ClientIdTakeover => &[M, N, R],
            C::Credentials => &[M, N],
            C::MessageSizeLimit => &[M],
            // rumqttd delivers at the granted QoS.
            C::MinQosDelivery => &[M, N, R],
            // rumqttd, NATS and RabbitMQ send one copy per matching subscription.
            C::OneCopyForOverlaps => &[M],
            // rumqttd 0.20's router panics slicing non-ASCII topics.
            C::NonAsciiTopics => &[M, N, R],
            // NATS maps topics to subjects: a space or dot closes the connection.
            C::SpacesAndDotsInTopics => &[M, E, R],
            C::MosquittoConfig => &[M],
            C::UnixSocket => &[M],
            // Debian's Mosquitto 2.0.11 is built without websockets; RabbitMQ's
            // rabbitmq_web_mqtt plugin is enabled on its node.
            C::WebSocketListener => &[R],
        };
        kinds.contains(&self)
    }

    /// The name of this kind as `COURIER_TEST_BROKER` spells it.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Mosquitto => "mosquitto",
            BrokerKind::Embedded => "embedded",
            BrokerKind::Nats => "nats",
            BrokerKind::RabbitMq => "rabbitmq",
        }
    }

    /// Returns true when a test needing `needs` must be skipped on this broker
    /// kind, and then prints
    /// `SKIP <test_name>: needs <capability>; COURIER_TEST_BROKER=<kind> lacks it`
    /// to stderr.
    pub fn skip_unless(self, test_name: &str, needs: &[Capability]) -> bool {
        let Some(missing) = needs.iter().find(|c| !self.supports(**c)) else {
            return false;
        };
        eprintln!(
            "SKIP {test_name}: needs {missing}; COURIER_TEST_BROKER={} lacks it",
            self.name()
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosquitto_supports_all_but_a_websocket_listener_the_others_less() {
        let all = Capability::ALL;
        let kinds = [
            BrokerKind::Mosquitto,
            BrokerKind::Embedded,
            BrokerKind::Nats,
            BrokerKind::RabbitMq,
        ];
        for capability in all {
            assert!(
                kinds.iter().any(|kind| kind.supports(capability)),
                "no broker kind has {capability}"
            );
            assert_eq!(
                BrokerKind::Mosquitto.supports(capability),
                capability != Capability::WebSocketListener,
                "{capability}"
            );
        }
        for kind in &kinds[1..] {
            assert!(all.iter().any(|c| !kind.supports(*c)), "{kind:?}");
        }
        assert!(BrokerKind::Mosquitto.skip_unless("t", &[Capability::WebSocketListener]));
        assert!(BrokerKind::RabbitMq.skip_unless("t", &[Capability::Restart]));
    }
}
