//! [`W3cTraceContextPropagator`]: the W3C Trace Context format (`traceparent`,
//! `tracestate`) without the OpenTelemetry SDK.
//!
//! The `opentelemetry` API crate has the propagator trait but not the W3C
//! implementation (that lives in `opentelemetry_sdk::propagation`); a library must
//! not depend on the SDK, so this module implements the small format itself. It
//! writes and reads the same fields as the SDK's `TraceContextPropagator`, so the two
//! interoperate.

use std::str::FromStr;

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

/// The `traceparent` field: `version-traceid-spanid-flags`, lowercase hex.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` field: vendor key-value pairs.
pub const TRACESTATE: &str = "tracestate";

/// The W3C Trace Context propagator (<https://www.w3.org/TR/trace-context/>):
/// injects `traceparent` (and `tracestate` when not empty) from the context's span,
/// and extracts a remote span context from them. The default propagator of
/// [`CourierOtel`](crate::CourierOtel).
#[derive(Debug, Clone, Copy, Default)]
pub struct W3cTraceContextPropagator {
    _private: (),
}

impl W3cTraceContextPropagator {
    /// The propagator.
    pub fn new() -> Self {
        W3cTraceContextPropagator { _private: () }
    }
}

/// Parse a `traceparent` value (and an optional `tracestate`) into a remote span
/// context; `None` when it is malformed or all-zero.
fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let parts: Vec<&str> = traceparent.trim().split_terminator('-').collect();
    let [version, trace_id, span_id, flags, rest @ ..] = parts.as_slice() else {
        return None;
    };
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || !lower_hex(trace_id, 32) || !lower_hex(span_id, 16) {
        return None;
    }
    if !lower_hex(flags, 2) {
        return None;
    }
    let version = u8::from_str_radix(version, 16).ok()?;
    // Version ff is invalid; version 00 has exactly four fields; later versions may
    // append fields, which are ignored.
    if version == 0xff || (version == 0 && !rest.is_empty()) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?) & TraceFlags::SAMPLED;
    let state = tracestate
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let context = SpanContext::new(trace_id, span_id, flags, true, state);
    context.is_valid().then_some(context)
}

impl TextMapPropagator for W3cTraceContextPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        injector.set(
            TRACEPARENT,
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                (sc.trace_flags() & TraceFlags::SAMPLED).to_u8()
            ),
        );
        let state = sc.trace_state().header();
        if !state.is_empty() {
            injector.set(TRACESTATE, state);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match extractor
            .get(TRACEPARENT)
            .and_then(|tp| parse(tp, extractor.get(TRACESTATE)))
        {
            Some(sc) => cx.with_remote_span_context(sc),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        // `FieldIter` borrows `String`s; the names are built once.
        static NAMES: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
        FieldIter::new(NAMES.get_or_init(|| [TRACEPARENT.to_owned(), TRACESTATE.to_owned()]))
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;
    use crate::carrier::{PropertiesExtractor, PropertiesInjector};

    fn remote(traceparent: &str) -> Option<SpanContext> {
        let props = vec![(TRACEPARENT.to_owned(), traceparent.to_owned())];
        let cx = W3cTraceContextPropagator::new()
            .extract_with_context(&Context::new(), &PropertiesExtractor::new(&props));
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(sc)
    }

    #[test]
    fn round_trip() {
        let sc = SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
            SpanId::from(0x00f0_67aa_0ba9_02b7),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_str("vendor=value").unwrap_or_default(),
        );
        let cx = Context::new().with_remote_span_context(sc.clone());
        let mut props = Vec::new();
        W3cTraceContextPropagator::new()
            .inject_context(&cx, &mut PropertiesInjector::new(&mut props));
        assert_eq!(
            props,
            vec![
                (
                    "traceparent".to_owned(),
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()
                ),
                ("tracestate".to_owned(), "vendor=value".to_owned()),
            ]
        );
        let back = W3cTraceContextPropagator::new()
            .extract_with_context(&Context::new(), &PropertiesExtractor::new(&props));
        let got = back.span().span_context().clone();
        assert_eq!(got.trace_id(), sc.trace_id());
        assert_eq!(got.span_id(), sc.span_id());
        assert!(got.is_sampled());
        assert!(got.is_remote());
        assert_eq!(got.trace_state().get("vendor"), Some("value"));
    }

    #[test]
    fn nothing_injected_without_a_span() {
        let mut props = Vec::new();
        W3cTraceContextPropagator::new()
            .inject_context(&Context::new(), &mut PropertiesInjector::new(&mut props));
        assert!(props.is_empty());
    }

    #[test]
    fn malformed_values_are_ignored() {
        assert!(remote("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
        assert!(remote("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").is_some());
        // A later version may add fields.
        assert!(remote("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some());
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(remote(bad).is_none(), "{bad:?} should be rejected");
        }
    }
}
