//! The protobuf decoder never panics on arbitrary bytes and round-trips messages.

use courier_codec_protobuf::{Protobuf, prost};
use proptest::prelude::*;

#[derive(Clone, PartialEq, prost::Message)]
struct Reading {
    #[prost(string, tag = "1")]
    sensor: String,
    #[prost(double, repeated, tag = "2")]
    values: Vec<f64>,
    #[prost(message, optional, tag = "3")]
    nested: Option<Box<Reading>>,
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Protobuf::<Reading>::from_slice(&bytes);
    }

    #[test]
    fn messages_round_trip(sensor in ".{0,40}", values in proptest::collection::vec(-1e9f64..1e9, 0..16), depth in 0usize..4) {
        let mut reading = Reading { sensor: sensor.clone(), values: values.clone(), nested: None };
        for _ in 0..depth {
            reading = Reading { sensor: sensor.clone(), values: values.clone(), nested: Some(Box::new(reading)) };
        }
        let bytes = Protobuf(reading.clone()).to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = Protobuf::<Reading>::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.0, reading);
    }
}
