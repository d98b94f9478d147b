//! Subscribe to `topic` and print what the quick start publishes.
//!
//! ```text
//! cargo run --example subscribe   # in a second terminal, next to the quickstart
//! ```

use courier::{Client, Message, QoS};
use courier_examples::{broker_url, ensure_broker};

#[derive(Debug, serde::Deserialize)]
struct Tick {
    time: u128,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = broker_url();
    let _embedded = ensure_broker(&url).await?;
    let client = Client::builder()
        .url(&url)
        .client_id(format!("courier-subscribe-{}", std::process::id()))
        .clean_session(true)
        .connect()
        .await?;

    client
        .subscribe("topic")
        .qos(QoS::AtLeastOnce)
        .handler(|_client: Client, msg: Message| async move {
            match msg.decode::<Tick>() {
                Ok(tick) => println!("{}: time = {}", msg.topic(), tick.time),
                Err(e) => println!("{}: {e}", msg.topic()),
            }
        })
        .await?;
    println!("Subscribed to \"topic\" on {url} (Ctrl-C to stop).");
    tokio::signal::ctrl_c().await?;
    client.stop().await;
    Ok(())
}
