//! The MessagePack decoders never panic on arbitrary bytes.

use std::collections::BTreeMap;

use courier_codec_msgpack::{MsgPack, MsgPackCodec};
use courier_core::codec::{decode_value, decode_with};
use proptest::prelude::*;

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code, reason = "only decoded")]
struct Shape {
    id: u64,
    name: String,
    items: Vec<BTreeMap<String, f64>>,
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_with::<Shape, _>(&MsgPackCodec::new(), &bytes);
        let _ = decode_value::<Shape>(&MsgPackCodec::compact(), &bytes);
        let _ = decode_value::<serde_json::Value>(&MsgPackCodec::new(), &bytes);
        let _ = MsgPack::<Vec<String>>::from_slice(&bytes);
    }

    #[test]
    fn values_round_trip(id in any::<u64>(), name in ".{0,40}", xs in proptest::collection::vec(any::<f64>().prop_filter("finite", |x| x.is_finite()), 0..8)) {
        let value = (id, name, xs);
        let bytes = MsgPack(&value).to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let MsgPack(back) = MsgPack::<(u64, String, Vec<f64>)>::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, value);
    }
}

/// A length prefix claiming 4 GiB must not make the decoder allocate it.
#[test]
fn huge_length_prefixes_do_not_allocate() {
    let claims_4gib_string = [0xdb, 0xff, 0xff, 0xff, 0xff, b'a'];
    assert!(decode_with::<String, _>(&MsgPackCodec::new(), &claims_4gib_string).is_err());
    let claims_4g_elements = [0xdd, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert!(decode_with::<Vec<u64>, _>(&MsgPackCodec::new(), &claims_4g_elements).is_err());
}
