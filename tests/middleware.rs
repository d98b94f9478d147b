#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failure fails the test"
)]
//! Middleware chains against a real broker: order, rewriting, short-circuiting, and
//! the handler, subscribe, unsubscribe and stop chains.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::client::middleware::{
    BoxStopper, BoxSubscriber, BoxUnsubscriber, Handler, Layer, PublishRequest, Publisher, Stopper,
    SubscribeRequest, Subscribed, Subscriber, UnsubscribeRequest, Unsubscriber, handler_fn,
    layer_fn, publish_fn,
};
use courier::{Client, Message, PublishError, SubscribeError, UnsubscribeError};
use courier_integration_tests::{broker, client, recv_n};

type Log = Arc<Mutex<Vec<String>>>;

/// Records its name and the topic, then calls the next publisher.
#[derive(Debug, Clone)]
struct Tag<P> {
    name: &'static str,
    log: Log,
    next: P,
}

impl<P: Publisher> Publisher for Tag<P> {
    async fn publish(&self, request: PublishRequest) -> Result<(), PublishError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} {}", self.name, request.topic));
        self.next.publish(request).await
    }
}

#[derive(Debug, Clone)]
struct TagLayer {
    name: &'static str,
    log: Log,
}

impl<P> Layer<P> for TagLayer {
    type Service = Tag<P>;

    fn layer(&self, next: P) -> Tag<P> {
        Tag {
            name: self.name,
            log: self.log.clone(),
            next,
        }
    }
}

fn tag(name: &'static str, log: &Log) -> TagLayer {
    TagLayer {
        name,
        log: log.clone(),
    }
}

/// Layers run first-registered outermost, in one tuple and across calls; a middleware
/// can rewrite the topic and short-circuit with an error.
#[tokio::test]
async fn publish_layers_run_in_order_rewrite_and_short_circuit() {
    let broker = broker().await;
    let log: Log = Arc::default();
    let c = client(&broker, "mw")
        .publish_layer((tag("a", &log), tag("b", &log)))
        .publish_layer(publish_fn(|mut request: PublishRequest, next| async move {
            if request.topic.starts_with("forbidden") {
                return Err(PublishError::Middleware("topic not allowed".into()));
            }
            request.topic = format!("tenant-7/{}", request.topic);
            next.publish(request).await
        }))
        .publish_layer(tag("c", &log))
        .connect()
        .await
        .unwrap();
    let mut sub = c.subscribe("tenant-7/#").await.unwrap();
    c.publish("orders", "x").await.unwrap();
    assert_eq!(
        recv_n(&mut sub, 1, Duration::from_secs(5)).await[0].topic(),
        "tenant-7/orders"
    );
    assert_eq!(
        *log.lock().unwrap(),
        ["a orders", "b orders", "c tenant-7/orders"]
    );

    let err = c.publish("forbidden/x", "x").await.unwrap_err();
    assert!(matches!(err, PublishError::Middleware(_)), "{err:?}");
    assert_eq!(log.lock().unwrap().len(), 5, "a and b saw it, c did not");
    c.stop().await;
}

/// Counts subscribe calls and prefixes filters; routing follows the rewritten filter.
#[derive(Debug)]
struct Prefix<S> {
    calls: Arc<AtomicUsize>,
    next: S,
}

impl<S: Subscriber> Subscriber for Prefix<S> {
    async fn subscribe(&self, mut request: SubscribeRequest) -> Result<Subscribed, SubscribeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        for (filter, _) in &mut request.filters {
            *filter = format!("tenant-7/{filter}");
        }
        self.next.subscribe(request).await
    }
}

#[derive(Debug)]
struct Count<S> {
    seen: Log,
    next: S,
}

impl<S: Unsubscriber> Unsubscriber for Count<S> {
    async fn unsubscribe(&self, request: UnsubscribeRequest) -> Result<(), UnsubscribeError> {
        self.seen
            .lock()
            .unwrap()
            .extend(request.filters.iter().cloned());
        self.next.unsubscribe(request).await
    }
}

impl<S: Stopper> Stopper for Count<S> {
    async fn stop(&self) {
        self.seen.lock().unwrap().push("stop".to_owned());
        self.next.stop().await;
    }
}

#[tokio::test]
async fn subscribe_unsubscribe_and_stop_chains() {
    let broker = broker().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen: Log = Arc::default();
    let (calls2, seen2, seen3) = (calls.clone(), seen.clone(), seen.clone());
    let c = client(&broker, "mw-sub")
        .subscribe_layer(layer_fn(move |next: BoxSubscriber| Prefix {
            calls: calls2.clone(),
            next,
        }))
        .unsubscribe_layer(layer_fn(move |next: BoxUnsubscriber| Count {
            seen: seen2.clone(),
            next,
        }))
        .stop_layer(layer_fn(move |next: BoxStopper| Count {
            seen: seen3.clone(),
            next,
        }))
        .connect()
        .await
        .unwrap();
    let mut sub = c.subscribe("alerts/+").await.unwrap();
    assert_eq!(sub.filters(), ["tenant-7/alerts/+"]);
    c.publish("tenant-7/alerts/fire", "!").await.unwrap();
    assert_eq!(
        recv_n(&mut sub, 1, Duration::from_secs(5)).await[0].topic(),
        "tenant-7/alerts/fire"
    );
    c.unsubscribe(["tenant-7/alerts/+"]).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    c.stop().await;
    assert_eq!(*seen.lock().unwrap(), ["tenant-7/alerts/+", "stop"]);
}

/// Handler middleware wraps every handler: it sees each message and each failure.
#[tokio::test]
async fn handler_layers_wrap_every_handler() {
    let broker = broker().await;
    let handled = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (h, f) = (handled.clone(), failed.clone());
    let c = client(&broker, "mw-handler")
        .handler_layer(handler_fn(move |client: Client, message: Message, next| {
            let (h, f) = (h.clone(), f.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let result = next.handle(client, message).await;
                if result.is_err() {
                    f.fetch_add(1, Ordering::SeqCst);
                }
                result
            }
        }))
        .connect()
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    c.subscribe("jobs/#")
        .handler(move |_c: Client, m: Message| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                if m.topic().ends_with("bad") {
                    return Err("bad job");
                }
                Ok(())
            }
        })
        .await
        .unwrap();
    for topic in ["jobs/1", "jobs/bad", "jobs/2"] {
        c.publish(topic, "x").await.unwrap();
    }
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handled.load(Ordering::SeqCst), 3);
    assert_eq!(failed.load(Ordering::SeqCst), 1);
    c.stop().await;
}
