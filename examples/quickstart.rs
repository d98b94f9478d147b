//! The Go quick start in Rust: publish `{"time": <ns>}` to `topic` every second until
//! Ctrl-C, then stop gracefully.
//!
//! ```text
//! cargo run --example quickstart            # localhost:1883, or MQTT_URL
//! ```
//! If nothing listens there, an embedded broker is started on that address.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use courier::{Client, QoS};
use courier_examples::{broker_url, ensure_broker};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .init();

    let url = broker_url();
    let _embedded = ensure_broker(&url).await?;

    let client = Client::builder()
        .url(&url)
        .client_id(format!("courier-quickstart-{}", std::process::id()))
        .connect()
        .await?;
    println!("Connected to {url}; publishing to \"topic\" every second (Ctrl-C to stop).");

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // One Ctrl-C future for the whole loop, so a press during a publish is not lost.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let time = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
                let msg = serde_json::json!({ "time": time });
                let publish = client.publish_value("topic", &msg).qos(QoS::AtLeastOnce);
                tokio::select! {
                    result = publish => match result {
                        Ok(()) => println!("Publish() success"),
                        Err(e) => println!("Publish() error = {e}"),
                    },
                    _ = &mut ctrl_c => break,
                }
            }
            _ = &mut ctrl_c => break,
        }
    }
    client.stop().await;
    println!("Stopped.");
    Ok(())
}
