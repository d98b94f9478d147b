//! Hostile input for the built-in codec and transforms: arbitrary bytes never panic,
//! and values round-trip.

use std::collections::BTreeMap;

use courier_core::codec::transform::{Base64, Gzip};
use courier_core::codec::{CodecExt, JsonCodec, decode_value, decode_with, encode_with};
use proptest::prelude::*;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Shape {
    id: u64,
    name: String,
    items: Vec<BTreeMap<String, i64>>,
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_with::<Shape, _>(&JsonCodec, &bytes);
        let _ = decode_value::<Shape>(&JsonCodec, &bytes);
        let _ = decode_with::<Shape, _>(&JsonCodec.then(Base64), &bytes);
        let _ = decode_value::<Shape>(&JsonCodec.then(Gzip::new()), &bytes);
        let _ = decode_value::<Shape>(&JsonCodec.then(Base64).or(JsonCodec), &bytes);
    }

    #[test]
    fn shapes_round_trip_through_every_stack(id in any::<u64>(), name in ".{0,30}", n in 0usize..4) {
        let shape = Shape { id, name, items: (0..n).map(|i| BTreeMap::from([(format!("k{i}"), i as i64)])).collect() };
        for bytes in [
            encode_with(&JsonCodec, &shape),
            encode_with(&JsonCodec.then(Base64), &shape),
            encode_with(&JsonCodec.then(Gzip::new()), &shape),
        ] {
            let bytes = bytes.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let decoder = JsonCodec.or(JsonCodec.then(Base64)).or(JsonCodec.then(Gzip::new()));
            let back: Shape = decode_with(&decoder, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &shape);
        }
    }
}

/// Deeply nested input is refused, not a stack overflow.
#[test]
fn deep_nesting_is_an_error() {
    let deep = "[".repeat(100_000);
    assert!(decode_value::<serde_json::Value>(&JsonCodec, deep.as_bytes()).is_err());
}
