//! MQTT topic names and topic filters: validation and matching.
//!
//! A *topic name* is what a message is published to; a *topic filter* is
//! what a client subscribes to. Both are UTF-8 strings split into *levels*
//! by `/`. Rust's `&str` already guarantees well-formed UTF-8, so only the
//! remaining MQTT 3.1.1 rules are checked here (plus the MQTT v5
//! shared-subscription syntax for filters).
//!
//! # Rejected
//!
//! * Empty strings \[MQTT-4.7.3-1\].
//! * Strings containing U+0000 (NUL) \[MQTT-4.7.3-2\].
//! * Strings longer than [`MAX_TOPIC_LEN`] (65,535) UTF-8 bytes
//!   \[MQTT-4.7.3-3\]. The limit applies to the whole string as sent,
//!   including any `$share/<group>/` prefix.
//! * Topic names containing `+` or `#` anywhere \[MQTT-3.3.2-2\]
//!   \[MQTT-4.7.1-1\].
//! * Topic filters where `#` is not a whole level or not the last level
//!   (`a/#/b`, `a#`, `#a`) \[MQTT-4.7.1-2\], or where `+` does not occupy a
//!   whole level (`a+`, `a/+b/c`) \[MQTT-4.7.1-3\].
//! * Malformed shared subscriptions `$share/<ShareName>/<filter>`: an empty
//!   share name, a share name containing `+` or `#`, or a missing / empty
//!   filter part \[MQTT-4.8.2-1\] \[MQTT-4.8.2-2\].
//!
//! # Accepted unchanged
//!
//! Empty levels (`/`, `a//b`, leading or trailing `/`), spaces, topics
//! starting with `$` (such as `$SYS/...`), U+FEFF inside the string and any
//! other non-ASCII UTF-8. Topics are case-sensitive and never normalised.
//!
//! # Not checked
//!
//! Brokers may impose extra limits. Mosquitto, for example, rejects topics
//! with more than 200 levels by default; this module does not pre-check that
//! (or any other broker-specific limit).
//!
//! # Matching
//!
//! [`filter_matches`] and [`TopicFilter::matches`] implement the standard
//! MQTT semantics used to route incoming messages to local handlers: `+`
//! matches exactly one level (which may be empty), `#` matches the parent
//! level and any number of child levels, and a filter whose first level is a
//! wildcard does not match topic names starting with `$` \[MQTT-4.7.2-1\].

use std::fmt;

/// The maximum length, in UTF-8 bytes, of a topic name or topic filter
/// \[MQTT-4.7.3-3\].
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The prefix that marks a shared subscription (MQTT v5, section 4.8.2).
const SHARE_PREFIX: &str = "$share/";

/// The first level of a shared subscription filter.
const SHARE_KEYWORD: &str = "$share";

/// Why a topic name or filter was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic name or filter is empty \[MQTT-4.7.3-1\].
    #[error("topic is empty")]
    Empty,
    /// The topic name or filter is longer than [`MAX_TOPIC_LEN`] bytes
    /// \[MQTT-4.7.3-3\].
    #[error("topic is {len} bytes, over the 65535 byte limit")]
    TooLong {
        /// The length of the rejected string, in UTF-8 bytes.
        len: usize,
    },
    /// The topic name or filter contains U+0000 \[MQTT-4.7.3-2\].
    #[error("topic contains a NUL character")]
    NulCharacter,
    /// A topic name contains `+` or `#` \[MQTT-3.3.2-2\] \[MQTT-4.7.1-1\].
    #[error("topic name contains a wildcard ('+' or '#')")]
    WildcardInName,
    /// A topic filter uses `#` other than as the whole last level
    /// \[MQTT-4.7.1-2\].
    #[error("'#' must be the last level and stand alone")]
    InvalidMultiLevelWildcard,
    /// A topic filter uses `+` other than as a whole level \[MQTT-4.7.1-3\].
    #[error("'+' must occupy a whole level")]
    InvalidSingleLevelWildcard,
    /// A `$share/<ShareName>/<filter>` filter is malformed
    /// \[MQTT-4.8.2-1\] \[MQTT-4.8.2-2\].
    #[error("invalid shared subscription: {reason}")]
    InvalidSharedSubscription {
        /// A short, human-readable description of the problem.
        reason: &'static str,
    },
}

/// Checks the rules shared by topic names and topic filters: non-empty,
/// at most [`MAX_TOPIC_LEN`] bytes, no NUL.
fn validate_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: topic.len() });
    }
    if topic.as_bytes().contains(&0) {
        return Err(TopicError::NulCharacter);
    }
    Ok(())
}

/// Validates a topic name, i.e. a topic that messages are published to.
///
/// The checks are, in this order:
///
/// 1. at least one byte \[MQTT-4.7.3-1\] ([`TopicError::Empty`]);
/// 2. at most [`MAX_TOPIC_LEN`] UTF-8 bytes \[MQTT-4.7.3-3\]
///    ([`TopicError::TooLong`]);
/// 3. no U+0000 \[MQTT-4.7.3-2\] ([`TopicError::NulCharacter`]);
/// 4. no `+` or `#` anywhere \[MQTT-3.3.2-2\] \[MQTT-4.7.1-1\]
///    ([`TopicError::WildcardInName`]).
///
/// Everything else is accepted unchanged, including empty levels, spaces,
/// a leading `$` and U+FEFF.
///
/// ```
/// use courier_core::topic::{validate_topic_name, TopicError};
///
/// assert_eq!(validate_topic_name("sport/tennis/player1"), Ok(()));
/// assert_eq!(validate_topic_name("a//b/"), Ok(()));
/// assert_eq!(validate_topic_name("sport/+"), Err(TopicError::WildcardInName));
/// ```
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    validate_common(topic)?;
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Validates a topic filter, i.e. a topic that is subscribed to, including
/// the MQTT v5 shared-subscription form `$share/<ShareName>/<filter>`.
///
/// The checks are, in this order:
///
/// 1. at least one byte \[MQTT-4.7.3-1\] ([`TopicError::Empty`]);
/// 2. at most [`MAX_TOPIC_LEN`] UTF-8 bytes for the whole string, including
///    any `$share/<ShareName>/` prefix \[MQTT-4.7.3-3\]
///    ([`TopicError::TooLong`]);
/// 3. no U+0000 \[MQTT-4.7.3-2\] ([`TopicError::NulCharacter`]);
/// 4. if the filter is exactly `$share` or starts with `$share/`, it must be
///    a well-formed shared subscription: a share name of at least one
///    character without `/`, `+` or `#`, followed by `/` and a non-empty
///    filter \[MQTT-4.8.2-1\] \[MQTT-4.8.2-2\]
///    ([`TopicError::InvalidSharedSubscription`]);
/// 5. `#` only as the whole last level \[MQTT-4.7.1-2\]
///    ([`TopicError::InvalidMultiLevelWildcard`]);
/// 6. `+` only as a whole level \[MQTT-4.7.1-3\]
///    ([`TopicError::InvalidSingleLevelWildcard`]).
///
/// For a shared subscription, rules 5 and 6 apply to the filter after the
/// share name, and their errors are returned as-is. Note that `$shared/x`
/// is an ordinary filter.
///
/// ```
/// use courier_core::topic::{validate_topic_filter, TopicError};
///
/// assert_eq!(validate_topic_filter("sport/+/player1/#"), Ok(()));
/// assert_eq!(validate_topic_filter("$share/group/sport/#"), Ok(()));
/// assert_eq!(
///     validate_topic_filter("sport/#/player1"),
///     Err(TopicError::InvalidMultiLevelWildcard)
/// );
/// ```
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    parse_topic_filter(filter).map(|_| ())
}

/// Validates `filter` and returns the byte offset of the part used for
/// matching (0 unless it is a shared subscription).
fn parse_topic_filter(filter: &str) -> Result<usize, TopicError> {
    validate_common(filter)?;
    let (offset, matching) = match split_shared(filter)? {
        Some((_, matching)) => (filter.len() - matching.len(), matching),
        None => (0, filter),
    };
    validate_filter_levels(matching)?;
    Ok(offset)
}

/// If `filter` is a shared subscription (exactly `$share` or starting with
/// `$share/`), splits it into the share name and the remaining filter.
/// Returns `Ok(None)` for an ordinary filter.
fn split_shared(filter: &str) -> Result<Option<(&str, &str)>, TopicError> {
    let rest = match filter.strip_prefix(SHARE_PREFIX) {
        Some(rest) => rest,
        None if filter == SHARE_KEYWORD => {
            return Err(TopicError::InvalidSharedSubscription {
                reason: "missing share name and topic filter",
            });
        }
        None => return Ok(None),
    };
    let Some((group, matching)) = rest.split_once('/') else {
        return Err(TopicError::InvalidSharedSubscription {
            reason: if rest.is_empty() {
                "missing share name and topic filter"
            } else {
                "missing topic filter after the share name"
            },
        });
    };
    if group.is_empty() {
        return Err(TopicError::InvalidSharedSubscription {
            reason: "share name is empty",
        });
    }
    if group.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::InvalidSharedSubscription {
            reason: "share name contains a wildcard ('+' or '#')",
        });
    }
    if matching.is_empty() {
        return Err(TopicError::InvalidSharedSubscription {
            reason: "topic filter after the share name is empty",
        });
    }
    Ok(Some((group, matching)))
}

/// Checks the wildcard placement rules \[MQTT-4.7.1-2\] \[MQTT-4.7.1-3\].
fn validate_filter_levels(filter: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::InvalidMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::InvalidSingleLevelWildcard);
        }
    }
    Ok(())
}

/// Does the topic name `topic` match the topic filter `filter`?
///
/// Standard MQTT semantics:
///
/// * a `+` level matches exactly one topic level, which may be empty
///   (`a/+` matches `a/b` and `a/` but not `a` or `a/b/c`);
/// * a `#` level matches the parent level and any number of child levels
///   (`sport/#` matches `sport`, `sport/`, `sport/tennis/x`);
/// * any other level must be equal byte for byte (case-sensitive);
/// * a filter whose first level is a wildcard does not match a topic name
///   starting with `$` \[MQTT-4.7.2-1\] (`$SYS/x` is matched by `$SYS/#`
///   but not by `#` or `+/x`);
/// * for a shared subscription `$share/<ShareName>/<filter>`, only
///   `<filter>` is matched against `topic`.
///
/// Both arguments are assumed to be valid (see [`validate_topic_filter`]
/// and [`validate_topic_name`]). Invalid input never panics; the answer is
/// then a best effort (a malformed shared subscription matches nothing).
///
/// Runs in time linear in the input lengths and does not allocate.
///
/// ```
/// use courier_core::topic::filter_matches;
///
/// assert!(filter_matches("sport/+/player1", "sport/tennis/player1"));
/// assert!(filter_matches("sport/#", "sport"));
/// assert!(filter_matches("$share/g/sport/#", "sport/tennis"));
/// assert!(!filter_matches("#", "$SYS/uptime"));
/// ```
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    match split_shared(filter) {
        Ok(Some((_, matching))) => match_levels(matching, topic),
        Ok(None) => match_levels(filter, topic),
        Err(_) => false,
    }
}

/// Matches `filter` (never treated as a shared subscription) against
/// `topic`, level by level.
fn match_levels(filter: &str, topic: &str) -> bool {
    // [MQTT-4.7.2-1]: wildcards at the first level do not match `$` topics.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // `#` matches the parent level and everything below it.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) => {
                if f != t {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

/// A validated topic filter, with the shared-subscription prefix parsed.
///
/// Construct one with [`TopicFilter::new`] or `TryFrom`. The full string
/// (as sent to the broker) is available from [`TopicFilter::as_str`]; for a
/// shared subscription `$share/<ShareName>/<filter>`,
/// [`TopicFilter::share_group`] returns the share name and
/// [`TopicFilter::matching_filter`] the `<filter>` part.
///
/// ```
/// use courier_core::topic::TopicFilter;
///
/// let filter = TopicFilter::new("$share/workers/jobs/+")?;
/// assert_eq!(filter.share_group(), Some("workers"));
/// assert_eq!(filter.matching_filter(), "jobs/+");
/// assert!(filter.matches("jobs/42"));
/// # Ok::<(), courier_core::topic::TopicError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter {
    /// The full filter as sent to the broker.
    raw: String,
    /// Byte offset of the matching part in `raw`: 0 for an ordinary filter,
    /// just past `$share/<ShareName>/` for a shared subscription.
    offset: usize,
    /// The matching part has no `+` or `#`: it matches by plain equality.
    exact: bool,
}

impl TopicFilter {
    /// Validates `filter` (see [`validate_topic_filter`]) and wraps it.
    pub fn new(filter: impl Into<String>) -> Result<TopicFilter, TopicError> {
        let raw = filter.into();
        let offset = parse_topic_filter(&raw)?;
        let exact = !raw[offset..].contains(['+', '#']);
        Ok(TopicFilter { raw, offset, exact })
    }

    /// The full filter, as sent to the broker (including any
    /// `$share/<ShareName>/` prefix).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The share name of a shared subscription (`Some("g")` for
    /// `$share/g/a/b`), or `None` for an ordinary filter.
    pub fn share_group(&self) -> Option<&str> {
        if self.offset == 0 {
            return None;
        }
        // `offset` points just past `$share/<ShareName>/`.
        self.raw.get(SHARE_PREFIX.len()..self.offset - 1)
    }

    /// Is this a shared subscription (`$share/<ShareName>/<filter>`)?
    pub fn is_shared(&self) -> bool {
        self.offset != 0
    }

    /// The part of the filter that topic names are matched against: `a/b`
    /// for `$share/g/a/b`, the whole filter otherwise.
    pub fn matching_filter(&self) -> &str {
        // `offset` is always on a char boundary (just after an ASCII '/').
        &self.raw[self.offset..]
    }

    /// Does the topic name `topic` match this filter? See
    /// [`filter_matches`] for the semantics; for a shared subscription only
    /// [`TopicFilter::matching_filter`] is matched.
    pub fn matches(&self, topic: &str) -> bool {
        // Not `filter_matches(self.matching_filter(), ..)`: the matching part
        // of `$share/g/$share/h/x` must not be parsed as shared again.
        if self.exact {
            return self.matching_filter() == topic;
        }
        match_levels(self.matching_filter(), topic)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.raw
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = TopicError;

    fn try_from(filter: &str) -> Result<Self, Self::Error> {
        TopicFilter::new(filter)
    }
}

impl TryFrom<String> for TopicFilter {
    type Error = TopicError;

    fn try_from(filter: String) -> Result<Self, Self::Error> {
        TopicFilter::new(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_err(reason: &'static str) -> TopicError {
        TopicError::InvalidSharedSubscription { reason }
    }

    fn is_shared_err(result: &Result<(), TopicError>) -> bool {
        matches!(result, Err(TopicError::InvalidSharedSubscription { .. }))
    }

    // ---- topic names ----------------------------------------------------

    #[test]
    fn names_accepted_unchanged() {
        for name in [
            "a",
            "/",
            "//",
            "a//b",
            "/a",
            "a/",
            "/a/",
            " ",
            "a b/ c ",
            "$SYS/broker/uptime",
            "$",
            "a\u{FEFF}b",
            "\u{FEFF}",
            "caf\u{e9}/\u{65e5}\u{672c}/\u{1F600}",
            "Sport/TENNIS",
            "$share",
            "$share/g/t",
            "$shared/x",
        ] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn name_empty() {
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
    }

    #[test]
    fn name_nul() {
        assert_eq!(validate_topic_name("\0"), Err(TopicError::NulCharacter));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NulCharacter));
        assert_eq!(validate_topic_name("a/b\0"), Err(TopicError::NulCharacter));
    }

    #[test]
    fn name_wildcards() {
        for name in [
            "+",
            "#",
            "a/+",
            "a/#",
            "+/a",
            "a+",
            "a#b",
            "sport/tennis#",
            "a/+/b",
        ] {
            assert_eq!(
                validate_topic_name(name),
                Err(TopicError::WildcardInName),
                "{name:?}"
            );
        }
    }

    #[test]
    fn name_length_limit() {
        let max = "a".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_topic_name(&max), Ok(()));
        let over = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(
            validate_topic_name(&over),
            Err(TopicError::TooLong {
                len: MAX_TOPIC_LEN + 1
            })
        );
        // The limit is in bytes, not chars: 32,768 two-byte chars = 65,536 bytes.
        let multibyte = "\u{e9}".repeat(32_768);
        assert_eq!(
            validate_topic_name(&multibyte),
            Err(TopicError::TooLong { len: 65_536 })
        );
        let multibyte_ok = format!("{}a", "\u{e9}".repeat(32_767));
        assert_eq!(validate_topic_name(&multibyte_ok), Ok(()));
    }

    #[test]
    fn name_check_order() {
        // Length is checked before NUL and wildcards.
        let long = format!("{}\0+", "a".repeat(MAX_TOPIC_LEN));
        assert_eq!(
            validate_topic_name(&long),
            Err(TopicError::TooLong {
                len: MAX_TOPIC_LEN + 2
            })
        );
        assert_eq!(validate_topic_name("+\0"), Err(TopicError::NulCharacter));
    }

    // ---- topic filters --------------------------------------------------

    #[test]
    fn filters_accepted() {
        for filter in [
            "a",
            "/",
            "a//b",
            "/a/",
            "#",
            "a/#",
            "/#",
            "a//#",
            "+",
            "+/+",
            "a/+",
            "a/+/b",
            "+/#",
            "+/+/#",
            "/+",
            "+/",
            "$SYS/#",
            "$SYS/+/x",
            "a b/\u{FEFF}/\u{e9}",
            "$shared/x",
            "$sharex",
            "$Share/g",
            "x/$share/g",
        ] {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter:?}");
        }
    }

    #[test]
    fn filter_empty_and_nul() {
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_filter("\0"), Err(TopicError::NulCharacter));
        assert_eq!(
            validate_topic_filter("a/\0/#"),
            Err(TopicError::NulCharacter)
        );
        assert_eq!(
            validate_topic_filter("$share/g/a\0"),
            Err(TopicError::NulCharacter)
        );
    }

    #[test]
    fn filter_invalid_multi_level_wildcard() {
        for filter in [
            "a/#/b", "a#", "#a", "a/b#", "#/", "#/#", "##", "a/#/", "+#", "a/+#",
        ] {
            assert_eq!(
                validate_topic_filter(filter),
                Err(TopicError::InvalidMultiLevelWildcard),
                "{filter:?}"
            );
        }
    }

    #[test]
    fn filter_invalid_single_level_wildcard() {
        for filter in ["a+", "+a", "a/++", "a/+b/c", "++", "a/b+/#", "+ "] {
            assert_eq!(
                validate_topic_filter(filter),
                Err(TopicError::InvalidSingleLevelWildcard),
                "{filter:?}"
            );
        }
    }

    #[test]
    fn filter_length_limit() {
        let max = format!("{}/#", "a".repeat(MAX_TOPIC_LEN - 2));
        assert_eq!(validate_topic_filter(&max), Ok(()));
        let over = format!("{}/#", "a".repeat(MAX_TOPIC_LEN - 1));
        assert_eq!(
            validate_topic_filter(&over),
            Err(TopicError::TooLong {
                len: MAX_TOPIC_LEN + 1
            })
        );
    }

    #[test]
    fn shared_length_limit_counts_prefix() {
        let prefix = "$share/g/";
        let ok = format!("{prefix}{}", "a".repeat(MAX_TOPIC_LEN - prefix.len()));
        assert_eq!(validate_topic_filter(&ok), Ok(()));
        let over = format!("{prefix}{}", "a".repeat(MAX_TOPIC_LEN - prefix.len() + 1));
        assert_eq!(
            validate_topic_filter(&over),
            Err(TopicError::TooLong {
                len: MAX_TOPIC_LEN + 1
            })
        );
    }

    // ---- shared subscriptions -------------------------------------------

    #[test]
    fn shared_accepted() {
        for filter in [
            "$share/g/t",
            "$share/a/b",
            "$share/g/#",
            "$share/g/+",
            "$share/g/a/+/b/#",
            "$share/g//",
            "$share/g/$SYS/#",
            "$share/\u{e9}quipe/t",
            "$share/g/$share/h/t",
            "$share/$share/t",
        ] {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter:?}");
        }
    }

    #[test]
    fn shared_rejected() {
        assert_eq!(
            validate_topic_filter("$share//t"),
            Err(shared_err("share name is empty"))
        );
        assert_eq!(
            validate_topic_filter("$share/g"),
            Err(shared_err("missing topic filter after the share name"))
        );
        assert_eq!(
            validate_topic_filter("$share/g/"),
            Err(shared_err("topic filter after the share name is empty"))
        );
        assert_eq!(
            validate_topic_filter("$share/a+b/t"),
            Err(shared_err("share name contains a wildcard ('+' or '#')"))
        );
        assert_eq!(
            validate_topic_filter("$share/a#/t"),
            Err(shared_err("share name contains a wildcard ('+' or '#')"))
        );
        assert_eq!(
            validate_topic_filter("$share/+/t"),
            Err(shared_err("share name contains a wildcard ('+' or '#')"))
        );
        assert_eq!(
            validate_topic_filter("$share/#/t"),
            Err(shared_err("share name contains a wildcard ('+' or '#')"))
        );
        assert_eq!(
            validate_topic_filter("$share"),
            Err(shared_err("missing share name and topic filter"))
        );
        assert_eq!(
            validate_topic_filter("$share/"),
            Err(shared_err("missing share name and topic filter"))
        );
        assert!(is_shared_err(&validate_topic_filter("$share//")));
        assert!(is_shared_err(&validate_topic_filter("$share/#")));
    }

    #[test]
    fn shared_inner_filter_errors_pass_through() {
        assert_eq!(
            validate_topic_filter("$share/g/a/#/b"),
            Err(TopicError::InvalidMultiLevelWildcard)
        );
        assert_eq!(
            validate_topic_filter("$share/g/a#"),
            Err(TopicError::InvalidMultiLevelWildcard)
        );
        assert_eq!(
            validate_topic_filter("$share/g/a+"),
            Err(TopicError::InvalidSingleLevelWildcard)
        );
    }

    #[test]
    fn shared_error_display() {
        assert_eq!(
            shared_err("share name is empty").to_string(),
            "invalid shared subscription: share name is empty"
        );
        assert_eq!(
            TopicError::TooLong { len: 70_000 }.to_string(),
            "topic is 70000 bytes, over the 65535 byte limit"
        );
    }

    // ---- TopicFilter ----------------------------------------------------

    #[test]
    fn topic_filter_plain() -> Result<(), TopicError> {
        let filter = TopicFilter::new("sport/+/player1")?;
        assert_eq!(filter.as_str(), "sport/+/player1");
        assert_eq!(filter.to_string(), "sport/+/player1");
        assert_eq!(filter.as_ref(), "sport/+/player1");
        assert_eq!(filter.share_group(), None);
        assert!(!filter.is_shared());
        assert_eq!(filter.matching_filter(), "sport/+/player1");
        assert!(filter.matches("sport/tennis/player1"));
        assert!(!filter.matches("sport/tennis/player2"));
        Ok(())
    }

    #[test]
    fn topic_filter_shared() -> Result<(), TopicError> {
        let filter = TopicFilter::new("$share/g/a/b")?;
        assert_eq!(filter.as_str(), "$share/g/a/b");
        assert_eq!(filter.to_string(), "$share/g/a/b");
        assert_eq!(filter.share_group(), Some("g"));
        assert!(filter.is_shared());
        assert_eq!(filter.matching_filter(), "a/b");
        assert!(filter.matches("a/b"));
        assert!(!filter.matches("$share/g/a/b"));

        let filter = TopicFilter::new("$share/a/b")?;
        assert_eq!(filter.share_group(), Some("a"));
        assert_eq!(filter.matching_filter(), "b");

        let filter = TopicFilter::new("$share/\u{e9}quipe/x/#")?;
        assert_eq!(filter.share_group(), Some("\u{e9}quipe"));
        assert_eq!(filter.matching_filter(), "x/#");
        Ok(())
    }

    #[test]
    fn topic_filter_nested_share_is_not_reparsed() -> Result<(), TopicError> {
        let filter = TopicFilter::new("$share/g/$share/h/t")?;
        assert_eq!(filter.share_group(), Some("g"));
        assert_eq!(filter.matching_filter(), "$share/h/t");
        assert!(filter.matches("$share/h/t"));
        assert!(!filter.matches("t"));
        Ok(())
    }

    #[test]
    fn topic_filter_not_shared_lookalikes() -> Result<(), TopicError> {
        for raw in ["$shared/x", "$sharex", "x/$share/g/t", "$SHARE/g/t"] {
            let filter = TopicFilter::new(raw)?;
            assert!(!filter.is_shared(), "{raw:?}");
            assert_eq!(filter.share_group(), None);
            assert_eq!(filter.matching_filter(), raw);
            assert!(filter.matches(raw));
        }
        Ok(())
    }

    #[test]
    fn topic_filter_try_from_and_errors() {
        assert_eq!(
            TopicFilter::try_from("a/#").map(|f| f.as_str().to_owned()),
            Ok("a/#".to_owned())
        );
        assert_eq!(
            TopicFilter::try_from(String::from("$share/g/#")).map(|f| f.is_shared()),
            Ok(true)
        );
        assert_eq!(TopicFilter::try_from(""), Err(TopicError::Empty));
        assert_eq!(
            TopicFilter::try_from(String::from("a/#/b")),
            Err(TopicError::InvalidMultiLevelWildcard)
        );
        assert_eq!(
            TopicFilter::new("a+"),
            Err(TopicError::InvalidSingleLevelWildcard)
        );
        assert_eq!(
            TopicFilter::new("$share//t"),
            Err(shared_err("share name is empty"))
        );
    }

    #[test]
    fn topic_filter_eq_and_hash() -> Result<(), TopicError> {
        use std::collections::HashSet;
        let set: HashSet<TopicFilter> = [
            TopicFilter::new("a/b")?,
            TopicFilter::new(String::from("a/b"))?,
            TopicFilter::new("$share/g/a/b")?,
        ]
        .into_iter()
        .collect();
        assert_eq!(set.len(), 2);
        Ok(())
    }

    // ---- matching -------------------------------------------------------

    /// (filter, topic, expected)
    const MATCH_TABLE: &[(&str, &str, bool)] = &[
        // Exact levels.
        ("a", "a", true),
        ("a", "b", false),
        ("a/b", "a/b", true),
        ("a/b", "a", false),
        ("a", "a/b", false),
        ("a/b", "a/b/", false),
        ("Sport", "sport", false),
        ("/", "/", true),
        ("a//b", "a//b", true),
        ("a//b", "a/b", false),
        ("/a", "a", false),
        ("caf\u{e9}", "caf\u{e9}", true),
        // `+`: exactly one level, possibly empty.
        ("+", "a", true),
        ("+", "", true),
        ("+", "a/b", false),
        ("+", "/", false),
        ("+/+", "/", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("+/+", "/finance", true),
        ("a/+", "a/", true),
        ("a/+", "a", false),
        ("a/+", "a/b/c", false),
        ("a/+/c", "a//c", true),
        ("a/+/c", "a/b/c", true),
        ("a/+/c", "a/b/d", false),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        // `#`: parent and any number of children.
        ("#", "a", true),
        ("#", "a/b/c", true),
        ("#", "/", true),
        ("#", "", true),
        ("sport/#", "sport", true),
        ("sport/#", "sport/", true),
        ("sport/#", "sport/tennis/x", true),
        ("sport/#", "sports", false),
        ("sport/#", "sport2/tennis", false),
        ("sport/tennis/#", "sport", false),
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("+/#", "a", true),
        ("+/#", "a/b/c", true),
        ("+/+/#", "a", false),
        ("a/+/#", "a/b", true),
        ("/#", "/a", true),
        ("/#", "a", false),
        // `$` topics [MQTT-4.7.2-1].
        ("#", "$SYS/x", false),
        ("#", "$SYS", false),
        ("+/x", "$SYS/x", false),
        ("+", "$SYS", false),
        ("+/#", "$SYS/x", false),
        ("$SYS/#", "$SYS/x", true),
        ("$SYS/#", "$SYS", true),
        ("$SYS/+", "$SYS/x", true),
        ("$SYS/x", "$SYS/x", true),
        ("a/#", "a/$x", true),
        ("a/+", "a/$x", true),
        ("+/x", "a/x", true),
        // Shared subscriptions match on the part after the share name.
        ("$share/g/a/b", "a/b", true),
        ("$share/g/a/b", "$share/g/a/b", false),
        ("$share/g/#", "anything/at/all", true),
        ("$share/g/#", "$SYS/x", false),
        ("$share/g/+/b", "a/b", true),
        ("$share/g/$SYS/#", "$SYS/x", true),
        ("$share/a/b", "b", true),
        ("$share/a/b", "a/b", false),
        ("$shared/x", "$shared/x", true),
        ("$shared/x", "x", false),
    ];

    #[test]
    fn matching_table() {
        assert!(MATCH_TABLE.len() >= 30);
        for &(filter, topic, expected) in MATCH_TABLE {
            assert_eq!(
                filter_matches(filter, topic),
                expected,
                "filter_matches({filter:?}, {topic:?})"
            );
            if let Ok(tf) = TopicFilter::new(filter) {
                assert_eq!(
                    tf.matches(topic),
                    expected,
                    "TopicFilter({filter:?}).matches({topic:?})"
                );
            }
        }
    }

    #[test]
    fn matching_invalid_input_does_not_panic() {
        // Malformed shared subscriptions match nothing.
        assert!(!filter_matches("$share//t", "t"));
        assert!(!filter_matches("$share/g", "g"));
        assert!(!filter_matches("$share", "$share"));
        // Other invalid input: best effort, but no panic.
        for (filter, topic) in [
            ("", ""),
            ("", "a"),
            ("a/#/b", "a/x/b"),
            ("a+", "a+"),
            ("#a", "#a"),
            ("\0", "\0"),
            ("a", ""),
        ] {
            let _ = filter_matches(filter, topic);
        }
    }
}
