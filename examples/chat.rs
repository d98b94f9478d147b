//! The Go docs' chat, in Rust. A chat service subscribes to `chat/+/send`, decodes
//! each message, forwards it to `chat/<to>/inbox` and replies to the sender on
//! `chat/<from>/status` with a `received_at` status. Alice and Bob are two more
//! clients; the example plays one exchange and exits.
//!
//! ```text
//! cargo run --example chat          # localhost:1883, or MQTT_URL
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use courier::{Client, Json, Message, QoS};
use courier_examples::{broker_url, ensure_broker};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ChatMessage {
    id: u64,
    to: String,
    text: String,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Status {
    id: u64,
    received_at: u128,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

async fn connect(url: &str, name: &str) -> Result<Client, courier::ConnectError> {
    Client::builder()
        .url(url)
        .client_id(format!("chat-{name}-{}", std::process::id()))
        .clean_session(true)
        .connect()
        .await
}

/// The service: decode, forward, acknowledge with `received_at`.
async fn relay(client: Client, msg: Message) -> Result<(), courier::BoxError> {
    let from = msg
        .topic()
        .split('/')
        .nth(1)
        .unwrap_or("unknown")
        .to_owned();
    let Json(chat) = msg.decode::<Json<ChatMessage>>()?;
    client
        .publish(format!("chat/{}/inbox", chat.to), Json(&chat))
        .qos(QoS::AtLeastOnce)
        .await?;
    let status = Status {
        id: chat.id,
        received_at: now_ms(),
    };
    client
        .publish(format!("chat/{from}/status"), Json(status))
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = broker_url();
    let _embedded = ensure_broker(&url).await?;

    let service = connect(&url, "service").await?;
    service.subscribe("chat/+/send").handler(relay).await?;

    let alice = connect(&url, "alice").await?;
    let bob = connect(&url, "bob").await?;
    let mut alice_status = alice.subscribe("chat/alice/status").await?;
    let mut bob_inbox = bob.subscribe("chat/bob/inbox").await?;

    let hello = ChatMessage {
        id: 1,
        to: "bob".into(),
        text: "hi Bob, courier here".into(),
    };
    alice.publish("chat/alice/send", Json(&hello)).await?;

    let wait = Duration::from_secs(5);
    let inbox = tokio::time::timeout(wait, bob_inbox.recv())
        .await?
        .ok_or("inbox closed")?;
    let Json(received) = inbox.decode::<Json<ChatMessage>>()?;
    println!("bob got #{}: {:?}", received.id, received.text);
    let status = tokio::time::timeout(wait, alice_status.recv())
        .await?
        .ok_or("status closed")?;
    let Json(status) = status.decode::<Json<Status>>()?;
    println!(
        "alice: message #{} received at {} ms",
        status.id, status.received_at
    );

    for client in [alice, bob, service] {
        client.stop().await;
    }
    Ok(())
}
