//! Shared set-up for the examples: find the broker, or start one.

use std::net::SocketAddr;
use std::time::Duration;

use courier_testkit::EmbeddedBroker;

/// The broker URL from `MQTT_URL`, default `mqtt://localhost:1883`.
pub fn broker_url() -> String {
    std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://localhost:1883".to_owned())
}

/// If nothing listens at `url` and it points at this machine, start an embedded
/// broker there and say so. Returns the broker to keep it alive. A URL the client
/// cannot use is left alone: `connect()` then reports what is wrong with it.
///
/// # Errors
///
/// When the host cannot be resolved, or the embedded broker cannot start.
pub async fn ensure_broker(
    url: &str,
) -> Result<Option<EmbeddedBroker>, Box<dyn std::error::Error>> {
    // The client's own parser, so the probe and the client agree on the address.
    let Ok(target) = courier::BrokerUrl::parse(url) else {
        return Ok(None);
    };
    let (host, port) = (target.host(), target.port());
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    for addr in &addrs {
        let probe =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                .await;
        if matches!(probe, Ok(Ok(_))) {
            return Ok(None);
        }
    }
    let Some(local) = addrs
        .iter()
        .find(|a| a.ip().is_loopback() && a.is_ipv4())
        .or_else(|| addrs.iter().find(|a| a.ip().is_loopback()))
    else {
        return Err(format!("nothing listens at {url}, and it is not this machine").into());
    };
    let broker = EmbeddedBroker::start(*local).await?;
    println!("Nothing listens at {url}: started an embedded MQTT broker (rumqttd) on {local}.");
    Ok(Some(broker))
}
