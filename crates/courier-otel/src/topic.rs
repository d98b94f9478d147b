//! Topic transformers: keep the metrics' `mqtt.topic` label low in cardinality.
//!
//! Every distinct label value is a new time series. A topic such as
//! `orders/123/created` carries an identifier; map it to `orders/{id}/created`
//! with [`CourierOtel::topic_transformer`](crate::CourierOtel::topic_transformer):
//!
//! ```
//! use courier_otel::{CourierOtel, topic};
//!
//! let otel = CourierOtel::new("orders-service")
//!     .topic_transformer(topic::map_levels(|level| {
//!         level.parse::<u64>().is_ok().then(|| "{id}".to_owned())
//!     }));
//! # let _ = otel;
//! let f = topic::map_levels(|level| level.parse::<u64>().is_ok().then(|| "{id}".to_owned()));
//! assert_eq!(f("orders/123/created"), "orders/{id}/created");
//! ```
//!
//! Spans keep the topic as it is: a span is one event, not a series.

/// A transformer that maps each `/`-separated level of a topic with `f`: `Some`
/// replaces the level, `None` keeps it.
pub fn map_levels<F>(f: F) -> impl Fn(&str) -> String + Send + Sync + 'static
where
    F: Fn(&str) -> Option<String> + Send + Sync + 'static,
{
    move |topic: &str| {
        let mut out = String::with_capacity(topic.len());
        for (i, level) in topic.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            match f(level) {
                Some(replaced) => out.push_str(&replaced),
                None => out.push_str(level),
            }
        }
        out
    }
}

/// A transformer that replaces every level made only of ASCII digits with
/// `placeholder`: `numeric_levels_as("{id}")` maps `orders/123/created` to
/// `orders/{id}/created`.
pub fn numeric_levels_as(
    placeholder: &'static str,
) -> impl Fn(&str) -> String + Send + Sync + 'static {
    map_levels(move |level| {
        (!level.is_empty() && level.bytes().all(|b| b.is_ascii_digit()))
            .then(|| placeholder.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_mapped() {
        let f = numeric_levels_as("{id}");
        assert_eq!(f("orders/123/created"), "orders/{id}/created");
        assert_eq!(f("orders//x"), "orders//x");
        assert_eq!(f("/1/"), "/{id}/");
        assert_eq!(f(""), "");
        let g = map_levels(|level| (level.len() > 3).then(|| "*".to_owned()));
        assert_eq!(g("a/bcde/f"), "a/*/f");
    }
}
