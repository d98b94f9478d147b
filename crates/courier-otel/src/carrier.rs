//! Carriers: OpenTelemetry's [`Injector`] and [`Extractor`] over message properties.
//!
//! A publish's [`PublishRequest::properties`](courier_core::client::middleware::PublishRequest)
//! and a message's [`Message::properties`](courier_core::Message::properties) are
//! `(key, value)` lists: MQTT 5 user properties, or the [envelope](crate::envelope)'s
//! header under MQTT 3.1.1. These carriers let any [`TextMapPropagator`]
//! write to and read from them.
//!
//! [`TextMapPropagator`]: opentelemetry::propagation::TextMapPropagator

use opentelemetry::propagation::{Extractor, Injector};

/// Writes propagation fields into a property list, replacing a property of the
/// same name (compared ASCII case-insensitively, as HTTP headers are).
#[derive(Debug)]
pub struct PropertiesInjector<'a> {
    properties: &'a mut Vec<(String, String)>,
}

impl<'a> PropertiesInjector<'a> {
    /// An injector writing into `properties`.
    pub fn new(properties: &'a mut Vec<(String, String)>) -> Self {
        PropertiesInjector { properties }
    }
}

impl Injector for PropertiesInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        match self
            .properties
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
        {
            Some((_, v)) => *v = value,
            None => self.properties.push((key.to_owned(), value)),
        }
    }
}

/// Reads propagation fields from a property list: the first property of a name
/// (compared ASCII case-insensitively).
#[derive(Debug, Clone, Copy)]
pub struct PropertiesExtractor<'a> {
    properties: &'a [(String, String)],
}

impl<'a> PropertiesExtractor<'a> {
    /// An extractor reading `properties`.
    pub fn new(properties: &'a [(String, String)]) -> Self {
        PropertiesExtractor { properties }
    }
}

impl Extractor for PropertiesExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.properties.iter().map(|(k, _)| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injector_replaces_and_extractor_reads() {
        let mut props = vec![("TraceParent".to_owned(), "old".to_owned())];
        let mut injector = PropertiesInjector::new(&mut props);
        injector.set("traceparent", "new".to_owned());
        injector.set("tracestate", "a=b".to_owned());
        assert_eq!(
            props,
            vec![
                ("TraceParent".to_owned(), "new".to_owned()),
                ("tracestate".to_owned(), "a=b".to_owned()),
            ]
        );
        let extractor = PropertiesExtractor::new(&props);
        assert_eq!(extractor.get("traceparent"), Some("new"));
        assert_eq!(extractor.get("missing"), None);
        assert_eq!(extractor.keys(), vec!["TraceParent", "tracestate"]);
    }
}
