//! Where the brokers are: the [`Resolver`] trait and the resolvers that ship with
//! courier (static, DNS, channel-driven).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use futures_util::stream;
use tokio::sync::watch;

use crate::address::Address;

/// A stream of address lists: each item replaces the previous list whole.
pub type AddressStream = Pin<Box<dyn Stream<Item = Vec<Address>> + Send + 'static>>;

/// Service discovery for a [`ClusterBuilder`](crate::ClusterBuilder)'s client (the Go
/// `WithResolver`): a stream of broker address lists.
///
/// The cluster calls [`updates`](Resolver::updates) once when it starts and then
/// follows the stream: every item is the complete, current list (not a delta). An
/// empty list is ignored (the cluster keeps what it has, as a discovery outage
/// should not take the service down); a stream that ends leaves the last list in
/// force.
///
/// Shipped: [`StaticResolver`] (a fixed list), [`DnsResolver`] (re-resolves a name on
/// an interval) and [`ChannelResolver`] (push lists from your own discovery loop:
/// Consul, Kubernetes endpoints, etcd). Implement the trait directly for anything
/// else:
///
/// ```
/// use courier_cluster::{Address, AddressStream, Resolver};
/// use futures_util::StreamExt;
///
/// /// Two fixed lists, the second after a second (a demo, not a real resolver).
/// struct Flip;
///
/// impl Resolver for Flip {
///     fn updates(&self) -> AddressStream {
///         futures_util::stream::iter([
///             vec![Address::new("10.0.0.1", 1883)],
///             vec![Address::new("10.0.0.2", 1883)],
///         ])
///         .then(|list| async move {
///             tokio::time::sleep(std::time::Duration::from_secs(1)).await;
///             list
///         })
///         .boxed()
///     }
/// }
/// ```
pub trait Resolver: Send + Sync + 'static {
    /// The address lists, the current one first.
    fn updates(&self) -> AddressStream;
}

impl<R: Resolver + ?Sized> Resolver for Arc<R> {
    fn updates(&self) -> AddressStream {
        (**self).updates()
    }
}

impl<R: Resolver + ?Sized> Resolver for Box<R> {
    fn updates(&self) -> AddressStream {
        (**self).updates()
    }
}

/// A fixed list of brokers (several Mosquittos, or the nodes of a cluster behind no
/// load balancer).
#[derive(Debug, Clone)]
pub struct StaticResolver {
    addresses: Vec<Address>,
}

impl StaticResolver {
    /// A resolver that yields `addresses` once.
    pub fn new(addresses: impl IntoIterator<Item = Address>) -> Self {
        StaticResolver {
            addresses: addresses.into_iter().collect(),
        }
    }

    /// The list it yields.
    pub fn addresses(&self) -> &[Address] {
        &self.addresses
    }
}

impl Resolver for StaticResolver {
    fn updates(&self) -> AddressStream {
        Box::pin(stream::iter([self.addresses.clone()]))
    }
}

/// Resolves a host name on an interval (with Tokio's `lookup_host`, so the system
/// resolver: `/etc/hosts`, DNS) and hands over every A/AAAA record as an address,
/// emitting only when the set changed. For a broker cluster behind a DNS name with
/// one record per node (a Kubernetes headless service, a round-robin record).
///
/// A failed or empty lookup is logged and skipped: the last list stays in force.
///
/// Addresses are IP addresses: with TLS, the certificate is checked against the IP,
/// so such brokers need certificates with IP subject alternative names.
#[derive(Debug, Clone)]
pub struct DnsResolver {
    host: String,
    port: u16,
    interval: Duration,
}

impl DnsResolver {
    /// Resolve `host` (every record gets `port`), by default every 30 s.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        DnsResolver {
            host: host.into(),
            port,
            interval: Duration::from_secs(30),
        }
    }

    /// How often to resolve again (default 30 s; at least 10 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }
}

/// State of a [`DnsResolver`] stream between items.
struct DnsState {
    host: String,
    port: u16,
    interval: Duration,
    last: Option<Vec<Address>>,
    first: bool,
}

impl Resolver for DnsResolver {
    fn updates(&self) -> AddressStream {
        let state = DnsState {
            host: self.host.clone(),
            port: self.port,
            interval: self.interval,
            last: None,
            first: true,
        };
        Box::pin(stream::unfold(state, |mut state| async move {
            loop {
                if !state.first {
                    tokio::time::sleep(state.interval).await;
                }
                state.first = false;
                let found = tokio::net::lookup_host((state.host.as_str(), state.port))
                    .await
                    .map(|found| found.map(Address::from).collect::<Vec<_>>());
                match found {
                    Ok(mut list) => {
                        list.sort();
                        list.dedup();
                        if list.is_empty() {
                            tracing::warn!(host = %state.host, "courier-cluster: DNS lookup found no address");
                        } else if state.last.as_ref() != Some(&list) {
                            state.last = Some(list.clone());
                            return Some((list, state));
                        }
                    }
                    Err(error) => {
                        tracing::warn!(host = %state.host, %error, "courier-cluster: DNS lookup failed");
                    }
                }
            }
        }))
    }
}

/// A resolver fed by your own code through its [`ResolverHandle`]: for discovery
/// systems courier does not ship (Consul, Kubernetes endpoints, etcd, a config
/// file). See the scaling guide (`courier::guides::scaling`) for a Consul loop.
///
/// Only the latest list matters: lists pushed faster than the cluster reads them
/// replace each other. Several clusters may share one resolver (each follows the
/// lists from when it started). When every handle is dropped the stream ends and
/// the last list stays in force.
///
/// ```
/// use courier_cluster::{Address, ChannelResolver};
///
/// let (resolver, handle) = ChannelResolver::new();
/// handle.update(vec![Address::new("10.0.0.1", 1883), Address::new("10.0.0.2", 1883)]);
/// // ClusterBuilder::new(template).multi_connection(resolver) ...
/// # drop(resolver);
/// ```
#[derive(Debug, Clone)]
pub struct ChannelResolver {
    rx: watch::Receiver<Option<Vec<Address>>>,
}

/// Pushes address lists to a [`ChannelResolver`]. Cheap to clone.
#[derive(Clone)]
pub struct ResolverHandle {
    tx: Arc<watch::Sender<Option<Vec<Address>>>>,
}

impl fmt::Debug for ResolverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolverHandle")
            .field("current", &*self.tx.borrow())
            .finish()
    }
}

impl ChannelResolver {
    /// A resolver with no list yet, and the handle that feeds it.
    pub fn new() -> (ChannelResolver, ResolverHandle) {
        let (tx, rx) = watch::channel(None);
        (ChannelResolver { rx }, ResolverHandle { tx: Arc::new(tx) })
    }
}

impl ResolverHandle {
    /// Replace the list of brokers.
    pub fn update(&self, addresses: Vec<Address>) {
        self.tx.send_replace(Some(addresses));
    }

    /// The list pushed last.
    pub fn current(&self) -> Option<Vec<Address>> {
        self.tx.borrow().clone()
    }
}

impl Resolver for ChannelResolver {
    fn updates(&self) -> AddressStream {
        let mut rx = self.rx.clone();
        // The current list counts as new for this stream.
        rx.mark_changed();
        Box::pin(stream::unfold(rx, |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                let current = rx.borrow_and_update().clone();
                if let Some(list) = current {
                    return Some((list, rx));
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{FutureExt, StreamExt};

    #[tokio::test]
    async fn static_resolver_yields_its_list_once() {
        let list = vec![Address::new("a", 1), Address::new("b", 2)];
        let mut s = StaticResolver::new(list.clone()).updates();
        assert_eq!(s.next().await, Some(list));
        assert_eq!(s.next().await, None);
    }

    #[tokio::test]
    async fn channel_resolver_follows_the_latest_list() {
        let (resolver, handle) = ChannelResolver::new();
        let mut s = resolver.updates();
        assert!(s.next().now_or_never().is_none(), "no list yet");
        handle.update(vec![Address::new("a", 1)]);
        handle.update(vec![Address::new("b", 1)]);
        assert_eq!(s.next().await, Some(vec![Address::new("b", 1)]));
        // A second stream starts from the current list.
        let mut s2 = resolver.updates();
        assert_eq!(
            s2.next().now_or_never(),
            Some(Some(vec![Address::new("b", 1)]))
        );
        handle.update(vec![]);
        assert_eq!(s.next().await, Some(vec![]));
        drop(handle);
        assert_eq!(s.next().await, None);
    }

    #[tokio::test]
    async fn dns_resolver_emits_only_changes() {
        let mut s = DnsResolver::new("localhost", 1883)
            .interval(Duration::from_millis(20))
            .updates();
        let first = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .unwrap()
            .unwrap();
        assert!(!first.is_empty());
        assert!(first.iter().all(|a| a.port == 1883));
        assert!(
            first
                .iter()
                .any(|a| a.host == "127.0.0.1" || a.host == "::1"),
            "{first:?}"
        );
        // The same records again: nothing new.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), s.next())
                .await
                .is_err()
        );
    }
}
