//! # courier-cluster
//!
//! Several MQTT connections behind one [`Client`](courier_core::Client), for
//! [courier-rs](https://github.com/courier-rs/courier-rs): the Go Courier's
//! `WithPoolSize`, `WithResolver`, `UseMultiConnectionMode` and
//! `SharedSubscriptionPredicate`.
//!
//! A [`ClusterBuilder`] takes a [`ClientBuilder`](courier_core::ClientBuilder) as
//! the template of every connection and returns the same `Client` type that
//! `ClientBuilder::connect` does: publish (with QoS, retain and timeout), subscribe
//! as a stream or with a handler, unsubscribe, events, info, stop, the middleware
//! and the codec work the same way, so a service written against `Client` runs on
//! one connection, a pool or a cluster by changing how it is built.
//!
//! | Mode | Set with | Connections | Publishes | Subscriptions |
//! |---|---|---|---|---|
//! | single | (default), [`resolver`](ClusterBuilder::resolver) | one; with a resolver, fails over along its list | that one | that one |
//! | pool | [`pool_size(n)`](ClusterBuilder::pool_size) | `n` to one address | least in flight (or round-robin) | shared: on each; others: on one |
//! | multi | [`multi_connection`](ClusterBuilder::multi_connection) | one per resolved address | least in flight (or round-robin) | shared: on each; others: on one |
//!
//! Addresses come from a [`Resolver`]: [`StaticResolver`], [`DnsResolver`], or
//! [`ChannelResolver`] for your own discovery (Consul, Kubernetes). When an address
//! leaves the list its connection is drained (in-flight publishes get their
//! acknowledgements) and closed; a publish that still fails there because the
//! connection closed or went down is sent again on another connection, so callers
//! see `Ok` (at least once). See `crates/courier/guides/scaling.md` (the guide `courier::guides::scaling`) for when to use which.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use courier_cluster::{Address, ClusterBuilder, StaticResolver};
//! use courier_core::{Client, Message, QoS};
//!
//! let brokers = StaticResolver::new([
//!     Address::new("mqtt-1.internal", 1883),
//!     Address::new("mqtt-2.internal", 1883),
//! ]);
//! let client: Client = ClusterBuilder::new(Client::builder().clean_session(true))
//!     .client_id("jobs-svc")
//!     .multi_connection(brokers)
//!     .connect()
//!     .await?;
//!
//! // On every broker: each job goes to one member of the group.
//! client
//!     .subscribe("$share/workers/jobs/#")
//!     .handler(|_client: Client, msg: Message| async move {
//!         println!("job {}", msg.topic());
//!     })
//!     .await?;
//! client.publish("jobs/1", "payload").qos(QoS::AtLeastOnce).await?;
//! println!("{}", serde_json::to_string_pretty(&client.info())?);
//! client.stop().await;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod address;
mod backend;
mod builder;
mod cluster;
mod conn;
mod error;
mod info;
mod publish;
mod resolver;
mod subscribe;

pub use address::{Address, AddressParseError};
pub use builder::{Balance, ClusterBuilder, Mode};
pub use error::{ClusterConfigError, ClusterConnectError};
pub use resolver::{
    AddressStream, ChannelResolver, DnsResolver, Resolver, ResolverHandle, StaticResolver,
};
