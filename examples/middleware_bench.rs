//! What a middleware chain costs: calls through an empty (pass-through) 3-layer
//! publish chain against calls of the same publisher with no chain, in one run.
//!
//! ```text
//! cargo run --release --example middleware_bench
//! ```
//! The last hop is a no-op publisher, so the figures are the chain's own cost per
//! publish; the client adds one such erased chain when any `publish_layer` is set.

use std::hint::black_box;
use std::time::Instant;

use courier::PublishError;
use courier::client::middleware::{BoxPublisher, Layer, PublishRequest, Publisher, publish_fn};

/// The last hop: does nothing.
#[derive(Debug, Clone, Copy)]
struct Sink;

impl Publisher for Sink {
    async fn publish(&self, request: PublishRequest) -> Result<(), PublishError> {
        black_box(request);
        Ok(())
    }
}

/// A middleware that only forwards.
#[derive(Debug, Clone)]
struct Pass<P>(P);

impl<P: Publisher> Publisher for Pass<P> {
    async fn publish(&self, request: PublishRequest) -> Result<(), PublishError> {
        self.0.publish(request).await
    }
}

#[derive(Debug, Clone, Copy)]
struct PassLayer;

impl<P> Layer<P> for PassLayer {
    type Service = Pass<P>;

    fn layer(&self, next: P) -> Pass<P> {
        Pass(next)
    }
}

/// Median ns per publish over 5 runs.
fn time<P: Publisher>(publisher: &P, request: &PublishRequest, n: u32) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().build();
    let Ok(rt) = rt else { return f64::NAN };
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    let _ = publisher.publish(request.clone()).await;
                }
                start.elapsed().as_nanos() as f64 / f64::from(n)
            })
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

fn main() {
    let n = 1_000_000;
    let request = PublishRequest::new("bench/topic", &b"0123456789abcdef0123456789abcdef"[..]);
    let direct = time(&Sink, &request, n);
    // What the client does with no layer: the request is handed to the last hop.
    let static3 = time(&(PassLayer, PassLayer, PassLayer).layer(Sink), &request, n);
    // What the client does with `publish_layer((A, B, C))`: one erased chain around an
    // erased last hop.
    let erased3 = time(
        &BoxPublisher::new((PassLayer, PassLayer, PassLayer).layer(BoxPublisher::new(Sink))),
        &request,
        n,
    );
    let closures3 = time(
        &(
            publish_fn(|r, next: BoxPublisher| async move { next.publish(r).await }),
            publish_fn(|r, next: BoxPublisher| async move { next.publish(r).await }),
            publish_fn(|r, next: BoxPublisher| async move { next.publish(r).await }),
        )
            .layer(Sink),
        &request,
        n,
    );
    println!("ns per publish call (request clone included), median of 5 x {n}:");
    println!("  no chain                          {direct:>7.1}");
    println!(
        "  3 pass-through layers, static     {static3:>7.1}  (+{:.1})",
        static3 - direct
    );
    println!(
        "  3 layers as the client runs them  {erased3:>7.1}  (+{:.1}: two boxed calls)",
        erased3 - direct
    );
    println!(
        "  3 publish_fn closures             {closures3:>7.1}  (+{:.1}: a boxed call per hop)",
        closures3 - direct
    );
}
