//! Encode + decode cost per codec, for a small message and a ~1 KiB one.
//!
//! ```text
//! cargo run --release --example codec_bench
//! ```
//! Prints nanoseconds per encode+decode round trip (median of 5 runs) and the
//! encoded size. A micro-benchmark: compare codecs with each other, on one machine.

use std::hint::black_box;
use std::time::Instant;

use courier::codec::{Decoder, Encoder, decode_with, encode_with};
use courier::prelude::*;
use courier::{Base64, Gzip, JsonCodec, MsgPackCodec, ProstCodec, prost};

#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize, prost::Message)]
#[prost(prost_path = "::courier::prost")]
struct Reading {
    #[prost(string, tag = "1")]
    sensor: String,
    #[prost(uint64, tag = "2")]
    time: u64,
    #[prost(double, repeated, tag = "3")]
    values: Vec<f64>,
    #[prost(string, tag = "4")]
    note: String,
}

fn small() -> Reading {
    Reading {
        sensor: "boiler-1".into(),
        time: 1_764_322_800_000,
        values: vec![21.5, 22.0],
        note: String::new(),
    }
}

fn kib() -> Reading {
    Reading {
        sensor: "boiler-1".into(),
        time: 1_764_322_800_000,
        values: (0..64).map(|i| f64::from(i) * 1.25).collect(),
        note: "maintenance window; ".repeat(20),
    }
}

/// Median ns per round trip over 5 runs of `iterations`, and the encoded size.
fn measure<C: Encoder<Reading> + Decoder<Reading>>(
    codec: &C,
    value: &Reading,
    iterations: u32,
) -> (f64, usize) {
    let size = encode_with(codec, value).map_or(0, |b| b.len());
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                let bytes = encode_with(codec, black_box(value));
                if let Ok(bytes) = bytes {
                    let _ = black_box(decode_with::<Reading, _>(codec, &bytes));
                }
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    (runs[2], size)
}

fn main() {
    let iterations = std::env::var("ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    println!(
        "{:<22} {:>12} {:>8} {:>12} {:>8}",
        "codec", "small ns", "bytes", "1 KiB ns", "bytes"
    );
    let row = |name: &str, small: (f64, usize), kib: (f64, usize)| {
        println!(
            "{name:<22} {:>12.0} {:>8} {:>12.0} {:>8}",
            small.0, small.1, kib.0, kib.1
        );
    };
    let (s, k) = (small(), kib());
    row(
        "json",
        measure(&JsonCodec, &s, iterations),
        measure(&JsonCodec, &k, iterations),
    );
    row(
        "msgpack (maps)",
        measure(&MsgPackCodec::new(), &s, iterations),
        measure(&MsgPackCodec::new(), &k, iterations),
    );
    row(
        "msgpack (compact)",
        measure(&MsgPackCodec::compact(), &s, iterations),
        measure(&MsgPackCodec::compact(), &k, iterations),
    );
    row(
        "protobuf (prost)",
        measure(&ProstCodec, &s, iterations),
        measure(&ProstCodec, &k, iterations),
    );
    let b64 = JsonCodec.then(Base64);
    row(
        "json + base64",
        measure(&b64, &s, iterations),
        measure(&b64, &k, iterations),
    );
    let gz = JsonCodec.then(Gzip::new());
    row(
        "json + gzip",
        measure(&gz, &s, iterations / 10),
        measure(&gz, &k, iterations / 10),
    );
    let chain = JsonCodec.or(MsgPackCodec::new());
    row(
        "json|msgpack (json in)",
        measure(&chain, &s, iterations),
        measure(&chain, &k, iterations),
    );
}
