//! Where in a TOML document a byte offset falls, as the dotted path users
//! would write: `limits.timeout_ms`, `nats.url`, `subscribe[0].subject`.
//!
//! serde's errors name only the last key (`unknown field `timeout_msec``),
//! and toml 0.9 keeps the key path it knows private; what it does give is the
//! span of the error. The document is parsed a second time into toml's
//! spanned tree ([`toml::de::DeTable`]) and the deepest key or value whose
//! span holds the error's start is the place at fault.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The dotted path of the key or value where `span` of `text` starts, or
/// `None` when that is in no key or value (a comment), when `span` is the
/// whole document (a missing top-level field) or the text is not TOML.
pub(super) fn path_at(text: &str, span: Range<usize>) -> Option<String> {
    let document = DeTable::parse(text).ok()?;
    if document.span() == span {
        return None;
    }
    in_table(document.get_ref(), span.start, "")
}

fn in_table(table: &DeTable<'_>, at: usize, path: &str) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let here = if path.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{path}.{}", key.get_ref())
        };
        if key.span().contains(&at) {
            return Some(here);
        }
        in_value(value, at, here)
    })
}

/// The deepest path inside `value` that holds `at`; `path` itself when only
/// the value as a whole does.
fn in_value(value: &Spanned<DeValue<'_>>, at: usize, path: String) -> Option<String> {
    let deeper = match value.get_ref() {
        DeValue::Table(table) => in_table(table, at, &path),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| in_value(item, at, format!("{path}[{i}]"))),
        _ => None,
    };
    deeper.or_else(|| value.span().contains(&at).then_some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path at the first occurrence of `needle` in `text`.
    fn path_of(text: &str, needle: &str) -> Option<String> {
        let at = text.find(needle).expect("needle is in the text");
        path_at(text, at..at + needle.len())
    }

    #[test]
    fn keys_in_tables_arrays_of_tables_and_nested_tables() {
        let text = "name = \"a\"\n[limits]\ntimeout_ms = 5\n\n[[subscribe]]\nsubject = \"x\"\n\
                    [[subscribe]]\nsubjct = \"y\"\n[auth.keys]\nfile = \"k\"\n";
        assert_eq!(path_of(text, "name").as_deref(), Some("name"));
        assert_eq!(
            path_of(text, "timeout_ms").as_deref(),
            Some("limits.timeout_ms")
        );
        assert_eq!(path_of(text, "5").as_deref(), Some("limits.timeout_ms"));
        assert_eq!(
            path_of(text, "subject").as_deref(),
            Some("subscribe[0].subject")
        );
        assert_eq!(
            path_of(text, "subjct").as_deref(),
            Some("subscribe[1].subjct")
        );
        assert_eq!(path_of(text, "file").as_deref(), Some("auth.keys.file"));
    }

    #[test]
    fn dotted_keys_inline_tables_and_arrays() {
        let text = "limits.queue = 1\nnats = { url = [\"a\", \"b\"] }\n";
        assert_eq!(path_of(text, "queue").as_deref(), Some("limits.queue"));
        assert_eq!(path_of(text, "\"b\"").as_deref(), Some("nats.url[1]"));
    }

    #[test]
    fn nowhere_is_none() {
        assert_eq!(path_of("# just a comment\n", "just"), None);
        assert_eq!(path_at("not = = toml", 0..1), None);
        // toml gives the document (and so a missing top-level field) the
        // empty span at 0.
        assert_eq!(path_at("a = 1\n[b]\nc = 2\n", 0..0), None);
    }
}
