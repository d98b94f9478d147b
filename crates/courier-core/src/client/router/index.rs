//! [`FilterIndex`]: topic filters indexed level by level, so that finding the
//! filters a topic matches costs the topic's depth (and the matches), not the
//! number of filters.

use std::collections::HashMap;

/// Route ids by filter, as a tree of filter levels.
#[derive(Debug, Default)]
pub(crate) struct FilterIndex {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    /// Filters that continue with this exact level.
    children: HashMap<Box<str>, Node>,
    /// Filters that continue with `+`.
    plus: Option<Box<Node>>,
    /// Filters that end at this level.
    here: Vec<u64>,
    /// Filters that end with `#` after this level: they match this level and
    /// everything below it.
    hash: Vec<u64>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.hash.is_empty()
    }
}

impl FilterIndex {
    /// Index route `id` under `filter` (the matching part of a valid filter: no
    /// `$share/` prefix).
    pub(crate) fn insert(&mut self, filter: &str, id: u64) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = match level {
                "#" => {
                    node.hash.push(id);
                    return;
                }
                "+" => node.plus.get_or_insert_with(Box::default),
                exact => node.children.entry(exact.into()).or_default(),
            };
        }
        node.here.push(id);
    }

    /// Remove route `id` from under `filter`, and the levels left empty.
    pub(crate) fn remove(&mut self, filter: &str, id: u64) {
        let levels: Vec<&str> = filter.split('/').collect();
        remove_from(&mut self.root, &levels, id);
    }

    /// Call `found` with every route whose filter matches `topic`. Filters that
    /// start with a wildcard do not match topics starting with `$` [MQTT-4.7.2-1].
    pub(crate) fn matches(&self, topic: &str, found: &mut impl FnMut(u64)) {
        let dollar = topic.starts_with('$');
        collect(&self.root, topic.split('/'), !dollar, found);
    }

    pub(crate) fn clear(&mut self) {
        self.root = Node::default();
    }
}

fn collect<'t>(
    node: &Node,
    mut levels: impl Iterator<Item = &'t str> + Clone,
    wildcards: bool,
    found: &mut impl FnMut(u64),
) {
    if wildcards {
        node.hash.iter().copied().for_each(&mut *found);
    }
    let Some(level) = levels.next() else {
        node.here.iter().copied().for_each(found);
        return;
    };
    if let Some(child) = node.children.get(level) {
        collect(child, levels.clone(), true, found);
    }
    if let Some(plus) = node.plus.as_deref().filter(|_| wildcards) {
        collect(plus, levels, true, found);
    }
}

/// Remove `id` below `node` along `levels`; true when `node` is left empty.
fn remove_from(node: &mut Node, levels: &[&str], id: u64) -> bool {
    match levels.split_first() {
        None => node.here.retain(|r| *r != id),
        Some((&"#", _)) => node.hash.retain(|r| *r != id),
        Some((&"+", rest)) => {
            if node
                .plus
                .as_deref_mut()
                .is_some_and(|plus| remove_from(plus, rest, id))
            {
                node.plus = None;
            }
        }
        Some((exact, rest)) => {
            if node
                .children
                .get_mut(*exact)
                .is_some_and(|child| remove_from(child, rest, id))
            {
                node.children.remove(*exact);
            }
        }
    }
    node.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::filter_matches;

    fn matching(index: &FilterIndex, topic: &str) -> Vec<u64> {
        let mut found = Vec::new();
        index.matches(topic, &mut |id| found.push(id));
        found.sort_unstable();
        found
    }

    const FILTERS: [&str; 12] = [
        "#", "+", "a", "a/#", "a/+", "a/b", "+/b", "a/+/c", "a//c", "+/+/+", "$SYS/#", "$SYS/+/x",
    ];
    const TOPICS: [&str; 10] = [
        "a",
        "a/",
        "a/b",
        "b/b",
        "a/b/c",
        "a//c",
        "/b",
        "$SYS/uptime",
        "$SYS/a/x",
        "x/y/z/w",
    ];

    #[test]
    fn agrees_with_the_matching_rules() {
        let mut index = FilterIndex::default();
        for (id, filter) in FILTERS.iter().enumerate() {
            index.insert(filter, id as u64);
        }
        for topic in TOPICS {
            let expected: Vec<u64> = FILTERS
                .iter()
                .enumerate()
                .filter(|(_, f)| filter_matches(f, topic))
                .map(|(id, _)| id as u64)
                .collect();
            assert_eq!(matching(&index, topic), expected, "{topic}");
        }
    }

    #[test]
    fn removing_leaves_the_others_and_prunes() {
        let mut index = FilterIndex::default();
        index.insert("a/+/c", 1);
        index.insert("a/+/c", 2);
        index.insert("a/#", 3);
        index.remove("a/+/c", 1);
        assert_eq!(matching(&index, "a/b/c"), [2, 3]);
        index.remove("a/+/c", 2);
        index.remove("a/#", 3);
        assert!(index.root.is_empty(), "{:?}", index.root);
    }
}
