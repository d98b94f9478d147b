//! Protocol Buffers over MQTT: a prost message defined with derive macros (no protoc),
//! published with `Protobuf(msg)` and decoded with `decode::<Protobuf<T>>()`.
//!
//! ```text
//! cargo run --example protobuf      # localhost:1883, or MQTT_URL
//! ```

use std::time::Duration;

use courier::{Client, Protobuf, QoS, prost};
use courier_examples::{broker_url, ensure_broker};

/// Telemetry from one device. `prost_path` points the derive at courier's re-export,
/// so this crate needs no direct prost dependency.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(prost_path = "::courier::prost")]
struct Telemetry {
    #[prost(string, tag = "1")]
    device: String,
    #[prost(double, tag = "2")]
    celsius: f64,
    #[prost(uint32, repeated, tag = "3")]
    alarms: Vec<u32>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = broker_url();
    let _embedded = ensure_broker(&url).await?;
    let client = Client::builder()
        .url(&url)
        .client_id(format!("courier-protobuf-{}", std::process::id()))
        .clean_session(true)
        .connect()
        .await?;

    let mut telemetry = client
        .subscribe("devices/+/telemetry")
        .qos(QoS::AtLeastOnce)
        .await?;
    for (i, device) in ["boiler", "pump"].into_iter().enumerate() {
        let reading = Telemetry {
            device: device.to_owned(),
            celsius: 60.0 + i as f64,
            alarms: vec![],
        };
        client
            .publish(format!("devices/{device}/telemetry"), Protobuf(reading))
            .await?;
    }
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), telemetry.recv())
            .await?
            .ok_or("subscription ended")?;
        let Protobuf(reading) = msg.decode::<Protobuf<Telemetry>>()?;
        println!(
            "{}: {} at {:.1} °C ({} bytes of protobuf)",
            msg.topic(),
            reading.device,
            reading.celsius,
            msg.payload().len()
        );
    }
    client.stop().await;
    Ok(())
}
