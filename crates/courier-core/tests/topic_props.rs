//! Property tests for `courier_core::topic`: validators never panic, matching
//! agrees with an independent reference model, and the validators accept /
//! reject generated inputs as the MQTT rules say.

use courier_core::topic::{
    MAX_TOPIC_LEN, TopicError, TopicFilter, filter_matches, validate_topic_filter,
    validate_topic_name,
};
use proptest::prelude::*;

// ---- reference model ------------------------------------------------------

/// Does one filter level (not `#`) match one topic level?
fn ref_level_matches(filter_level: &str, topic_level: &str) -> bool {
    filter_level == "+" || filter_level == topic_level
}

/// Straightforward reference implementation of MQTT matching, formulated
/// differently from the library: split both into `Vec`s of levels; a filter
/// ending in `#` matches when the topic has at least as many levels as the
/// filter without its `#` and those leading levels match pairwise; any other
/// filter matches when both have the same number of levels and all levels
/// match pairwise. Shared subscriptions are matched on the part after
/// `$share/<group>/`.
fn ref_matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((_group, inner)) => inner,
            None => return false,
        },
        None => filter,
    };
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();

    // [MQTT-4.7.2-1]
    let first_is_wildcard = f.first().is_some_and(|l| *l == "+" || *l == "#");
    let topic_is_dollar = t.first().is_some_and(|l| l.starts_with('$'));
    if first_is_wildcard && topic_is_dollar {
        return false;
    }

    if f.last() == Some(&"#") {
        let prefix = &f[..f.len() - 1];
        t.len() >= prefix.len()
            && prefix
                .iter()
                .zip(t.iter())
                .all(|(fl, tl)| ref_level_matches(fl, tl))
    } else {
        f.len() == t.len()
            && f.iter()
                .zip(t.iter())
                .all(|(fl, tl)| ref_level_matches(fl, tl))
    }
}

// ---- strategies -----------------------------------------------------------

/// Short strings over an alphabet rich in the characters the rules care about.
fn tricky_string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            'a', 'b', '/', '+', '#', '$', '\0', 'é', ' ', '\u{FEFF}',
        ]),
        0..48,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// Strings built from `$share`-ish fragments, to exercise the shared parser.
fn shareish_string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["$share", "/", "g", "+", "#", "", "a", "$"]),
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

/// Long strings (up to 70k chars, often around the 65,535 byte limit) made
/// of a repeated unit.
fn long_string() -> impl Strategy<Value = String> {
    (
        prop_oneof![(MAX_TOPIC_LEN - 4)..=(MAX_TOPIC_LEN + 4), 0usize..70_000,],
        prop::sample::select(vec!["a", "/", "+", "#", "é", "a/", "+/"]),
    )
        .prop_map(|(len, unit)| unit.repeat(len).chars().take(len).collect())
}

/// A valid filter over a tiny alphabet: levels from {"a","b","$x","","+"},
/// optionally followed by a `#` level, optionally shared.
fn small_filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(vec!["a", "b", "$x", "", "+"]), 0..5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_filter_map("empty filter", |(mut levels, hash, shared)| {
            if hash {
                levels.push("#");
            }
            let filter = levels.join("/");
            if filter.is_empty() {
                return None;
            }
            Some(if shared {
                format!("$share/g/{filter}")
            } else {
                filter
            })
        })
}

/// A valid topic name over a tiny alphabet: levels from {"a","b","$x",""}.
fn small_topic() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "$x", ""]), 1..6)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("empty topic", |t| !t.is_empty())
}

/// A topic and a filter derived from it (some levels replaced by `+`, the
/// tail possibly replaced by `#`), so that many pairs match.
fn derived_pair() -> impl Strategy<Value = (String, String)> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["a", "b", "$x", ""]),
            any::<bool>(),
        ),
        1..6,
    )
    .prop_flat_map(|levels| {
        let n = levels.len();
        (Just(levels), 0..=n + 1)
    })
    .prop_filter_map("empty topic or filter", |(levels, cut)| {
        let topic = levels.iter().map(|(l, _)| *l).collect::<Vec<_>>().join("/");
        let mut filter_levels: Vec<&str> = levels
            .iter()
            .map(|(l, plus)| if *plus { "+" } else { *l })
            .collect();
        if cut <= filter_levels.len() {
            filter_levels.truncate(cut);
            filter_levels.push("#");
        }
        let filter = filter_levels.join("/");
        (!topic.is_empty() && !filter.is_empty()).then_some((topic, filter))
    })
}

/// A level that is valid in a filter and cannot form `$share`: plain text
/// (possibly empty) or `+`.
fn valid_filter_level() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-c$é ~\u{FEFF}]{0,5}",
        1 => Just("+".to_owned()),
    ]
}

/// A name that may or may not look like a shared subscription.
fn name_candidate() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        tricky_string(),
        shareish_string(),
        "[a-c$é /]{1,12}",
        "[a-c/]{0,6}".prop_map(|s| format!("$share/{s}")),
    ]
}

// ---- properties -----------------------------------------------------------

proptest! {
    /// (1) Validators, the constructor and the matcher never panic.
    #[test]
    fn never_panics(
        a in prop_oneof![any::<String>(), tricky_string(), shareish_string()],
        b in prop_oneof![any::<String>(), tricky_string(), shareish_string()],
    ) {
        let _ = validate_topic_name(&a);
        let _ = validate_topic_filter(&a);
        let _ = filter_matches(&a, &b);
        let _ = filter_matches(&b, &a);
        if let Ok(filter) = TopicFilter::new(a.as_str()) {
            let _ = filter.matches(&b);
            let _ = filter.share_group();
            prop_assert_eq!(filter.as_str(), a.as_str());
        }
    }

    /// (1) The length rule: `TooLong` exactly when over 65,535 bytes.
    #[test]
    fn length_rule(s in long_string()) {
        let over = s.len() > MAX_TOPIC_LEN;
        for result in [validate_topic_name(&s), validate_topic_filter(&s)] {
            if over {
                prop_assert_eq!(result, Err(TopicError::TooLong { len: s.len() }));
            } else {
                let too_long = matches!(result, Err(TopicError::TooLong { .. }));
                prop_assert!(!too_long, "TooLong for {} bytes", s.len());
            }
        }
    }

    /// (2) `filter_matches` agrees with the reference model.
    #[test]
    fn matches_reference_model(filter in small_filter(), topic in small_topic()) {
        prop_assert_eq!(validate_topic_filter(&filter), Ok(()));
        prop_assert_eq!(validate_topic_name(&topic), Ok(()));
        let expected = ref_matches(&filter, &topic);
        prop_assert_eq!(filter_matches(&filter, &topic), expected);
        let parsed = TopicFilter::new(filter.as_str());
        prop_assert_eq!(parsed.map(|f| f.matches(&topic)), Ok(expected));
    }

    /// (2) Same, on pairs where the filter is derived from the topic.
    #[test]
    fn matches_reference_model_derived((topic, filter) in derived_pair()) {
        prop_assert_eq!(validate_topic_filter(&filter), Ok(()));
        let expected = ref_matches(&filter, &topic);
        prop_assert_eq!(filter_matches(&filter, &topic), expected);
        // A derived filter always matches unless the `$` rule applies.
        let dollar_rule = topic.starts_with('$')
            && (filter.starts_with('+') || filter.starts_with('#'));
        prop_assert_eq!(expected, !dollar_rule);
    }

    /// (3) Joining valid levels, with an optional trailing `#` and an
    /// optional shared prefix, gives a valid filter.
    #[test]
    fn joined_valid_levels_validate(
        levels in prop::collection::vec(valid_filter_level(), 1..8),
        hash in any::<bool>(),
        group in prop::option::of("[a-z0-9$é_ -]{1,6}"),
    ) {
        let mut levels = levels;
        if hash {
            levels.push("#".to_owned());
        }
        let inner = levels.join("/");
        prop_assume!(!inner.is_empty());
        let filter = match &group {
            Some(g) => format!("$share/{g}/{inner}"),
            None => inner.clone(),
        };
        prop_assert_eq!(validate_topic_filter(&filter), Ok(()));
        let parsed = TopicFilter::new(filter.as_str());
        prop_assert!(parsed.is_ok());
        if let Ok(parsed) = parsed {
            prop_assert_eq!(parsed.share_group(), group.as_deref());
            prop_assert_eq!(parsed.is_shared(), group.is_some());
            prop_assert_eq!(parsed.matching_filter(), inner.as_str());
            prop_assert_eq!(parsed.as_str(), filter.as_str());
        }
    }

    /// (4) A topic name containing `+` or `#` is rejected.
    #[test]
    fn wildcard_names_rejected(
        head in prop_oneof![any::<String>(), tricky_string()],
        wildcard in prop::sample::select(vec!['+', '#']),
        tail in prop_oneof![any::<String>(), tricky_string()],
    ) {
        let name = format!("{head}{wildcard}{tail}");
        let result = validate_topic_name(&name);
        prop_assert!(result.is_err());
        if !name.contains('\0') {
            prop_assert_eq!(result, Err(TopicError::WildcardInName));
        }
    }

    /// (5) A valid topic name is a valid filter that matches exactly itself,
    /// except for names that look like shared subscriptions (`$share` or
    /// `$share/...`), which as filters are parsed as shared.
    #[test]
    fn valid_name_is_filter_matching_itself(name in name_candidate()) {
        prop_assume!(validate_topic_name(&name).is_ok());
        let parsed = TopicFilter::new(name.as_str());
        if name == "$share" || name.starts_with("$share/") {
            // Either rejected as a malformed shared subscription or shared.
            match parsed {
                Ok(filter) => prop_assert!(filter.is_shared()),
                Err(e) => prop_assert!(
                    matches!(e, TopicError::InvalidSharedSubscription { .. }),
                    "unexpected error {:?}", e
                ),
            }
        } else {
            prop_assert!(parsed.is_ok());
            if let Ok(filter) = parsed {
                prop_assert!(!filter.is_shared());
                prop_assert!(filter.matches(&name));
                prop_assert!(filter_matches(&name, &name));
            }
        }
    }
}

// ---- targeted cases -------------------------------------------------------

#[test]
fn length_boundaries() {
    let exact = "a".repeat(MAX_TOPIC_LEN);
    assert_eq!(validate_topic_name(&exact), Ok(()));
    assert_eq!(validate_topic_filter(&exact), Ok(()));

    let over = "a".repeat(MAX_TOPIC_LEN + 1);
    let err = Err(TopicError::TooLong {
        len: MAX_TOPIC_LEN + 1,
    });
    assert_eq!(validate_topic_name(&over), err);
    assert_eq!(validate_topic_filter(&over), err);

    // Bytes, not chars: 32,768 × 'é' is 65,536 bytes.
    let multibyte = "é".repeat(32_768);
    assert_eq!(
        validate_topic_name(&multibyte),
        Err(TopicError::TooLong { len: 65_536 })
    );

    // 70k with a wildcard at the end: length is reported first.
    let long_wild = format!("{}#", "a/".repeat(35_000));
    assert_eq!(
        validate_topic_filter(&long_wild),
        Err(TopicError::TooLong { len: 70_001 })
    );
}

#[test]
fn reference_model_sanity() {
    assert!(ref_matches("sport/#", "sport"));
    assert!(ref_matches("sport/#", "sport/"));
    assert!(ref_matches("a/+", "a/"));
    assert!(!ref_matches("a/+", "a"));
    assert!(!ref_matches("#", "$SYS/x"));
    assert!(ref_matches("$SYS/#", "$SYS/x"));
    assert!(ref_matches("$share/g/#", "x"));
    assert!(!ref_matches("$share/g/#", "$x"));
}
