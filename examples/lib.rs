//! Shared set-up for the examples: find the broker, or start one.

use std::net::SocketAddr;
use std::time::Duration;

use courier_testkit::EmbeddedBroker;

/// The broker URL from `MQTT_URL`, default `mqtt://localhost:1883`.
pub fn broker_url() -> String {
    std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://localhost:1883".to_owned())
}

/// If nothing listens at `url` and it points at this machine, start an embedded
/// broker there and say so. Returns the broker to keep it alive.
///
/// # Errors
///
/// When the URL cannot be parsed, or the embedded broker cannot start.
pub async fn ensure_broker(
    url: &str,
) -> Result<Option<EmbeddedBroker>, Box<dyn std::error::Error>> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("mqtt", url));
    let default_port = if matches!(scheme, "mqtts" | "ssl" | "tls") {
        8883
    } else {
        1883
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        // [v6]:port or [v6]
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or("unclosed '[' in the URL")?;
            let port = after
                .strip_prefix(':')
                .map_or(Ok(default_port), str::parse)?;
            (host, port)
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>()?),
            None => (authority, default_port),
        },
    };
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
