//! Reading a [`SchedulerConfig`] from TOML text: parse, validate, and point every error at
//! its line and column, with the nearest known key suggested for a misspelt one. Errors are
//! located from the spans toml keeps for every key and value of the parsed document.

use crate::config::SchedulerConfig;
use crate::error::ConfigError;
use crate::slo::ClassSlo;
use serde::de::{self, Deserialize, IntoDeserializer};
use std::ops::Range;
use std::path::Path;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

impl SchedulerConfig {
    /// Parses and validates a TOML document. Fields left out take their defaults
    /// ([`SchedulerConfig::default`]); unknown keys are refused. A document without
    /// `slo.classes` gives each class the targets of the default class of its name
    /// ([`crate::ClassSlo::default_named`]: `HIGH`, `MEDIUM`, `LOW`), and no targets to a
    /// class of any other name.
    ///
    /// ```
    /// let cfg = triage::SchedulerConfig::from_toml_str("max_wait_ms = 90000").unwrap();
    /// assert_eq!(cfg.max_wait_ms, 90_000);
    ///
    /// let e = triage::SchedulerConfig::from_toml_str("max_wiat_ms = 90000").unwrap_err();
    /// assert_eq!(e.location, Some((1, 1)));
    /// assert!(e.expected.contains("did you mean `max_wait_ms`"), "{e}");
    /// ```
    pub fn from_toml_str(text: &str) -> Result<SchedulerConfig, ConfigError> {
        // One parse into a tree that keeps every key's and value's span; a syntax error
        // still leaves the tree around it, to name the key it is in.
        let (doc, errors) = DeTable::parse_recoverable(text);
        if let Some(e) = errors.first() {
            return Err(parse_error(text, &doc, e, false));
        }
        let mut config = SchedulerConfig::deserialize(toml::de::Deserializer::from(doc.clone()))
            .map_err(|e| parse_error(text, &doc, &e, true))?;
        if !sets_slo_classes(&doc) {
            // Serde filled in the three default classes' targets, by position; the rule is
            // by name, for however many classes the file has.
            config.slo.classes = config
                .classes
                .iter()
                .map(|c| ClassSlo::default_named(&c.name))
                .collect();
        }
        config.validate().map_err(|mut e| {
            e.location = locate(text, &doc, &e.field);
            e
        })?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file. An unreadable file is a `ConfigError` on
    /// the field `<file>`, naming the path.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("triage-doc-{}.toml", std::process::id()));
    /// std::fs::write(&path, "max_wait_ms = 90000\n[engine]\ntotal_blocks = 4096\n").unwrap();
    /// let cfg = triage::SchedulerConfig::from_path(&path).unwrap();
    /// assert_eq!((cfg.max_wait_ms, cfg.engine.total_blocks), (90_000, 4096));
    /// std::fs::remove_file(&path).unwrap();
    /// assert_eq!(triage::SchedulerConfig::from_path(&path).unwrap_err().field, "<file>");
    /// ```
    pub fn from_path(path: impl AsRef<Path>) -> Result<SchedulerConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            field: "<file>".to_string(),
            expected: "a readable TOML file".to_string(),
            found: format!("{}: {e}", path.display()),
            location: None,
        })?;
        Self::from_toml_str(&text)
    }
}

/// Whether the document gives `slo.classes` (as `[[slo.classes]]` tables or a `classes`
/// key in `[slo]`), even an empty list.
fn sets_slo_classes(doc: &Spanned<DeTable>) -> bool {
    doc.get_ref()
        .get("slo")
        .and_then(|slo| slo.get_ref().as_table())
        .is_some_and(|slo| slo.contains_key("classes"))
}

/// 1-based (line, column) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (u32, u32) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(at, |nl| at - nl - 1) + 1;
    (line as u32, column as u32)
}

/// One step of a field path: a key, or an index into a list (`classes[1]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The steps of a field path as `SchedulerConfig::validate` writes it:
/// `slo.classes[0].ttft` is `slo`, `classes`, 0, `ttft`.
fn steps(field: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let mut pieces = part.split('[');
        out.extend(pieces.next().map(Step::Key));
        out.extend(pieces.filter_map(|i| i.strip_suffix(']')?.parse().ok().map(Step::Index)));
    }
    out
}

/// A field path written back: `classes[1].name`.
fn field_name(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Finds the line and column of the key a field path names (`classes[2].promote_after_ms`,
/// `engine.watermark`, `slo.classes[0].ttft.quantile`): the key itself if the file sets
/// it, else the nearest enclosing key or list entry it sets; `None` if it sets none (the
/// value came from the defaults). A table or list entry given by a `[header]` or
/// `[[header]]` is located at its header.
fn locate(text: &str, doc: &Spanned<DeTable>, field: &str) -> Option<(u32, u32)> {
    let mut steps = steps(field).into_iter();
    let Some(Step::Key(first)) = steps.next() else {
        return None;
    };
    let (mut at, mut value) = entry(doc.get_ref(), first)?;
    for step in steps {
        let next = match (step, value.get_ref()) {
            (Step::Key(k), DeValue::Table(t)) => entry(t, k),
            (Step::Index(i), DeValue::Array(a)) => a.get(i).map(|v| (v.span().start, v)),
            _ => None,
        };
        let Some(next) = next else { break };
        (at, value) = next;
    }
    Some(line_col(text, at))
}

/// The value of `key` in `table`, with where the key starts: a table given by a `[header]`
/// starts at the header's `[`, before its key.
fn entry<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<(usize, &'a Spanned<DeValue<'i>>)> {
    let (k, v) = table.get_key_value(key)?;
    Some((k.span().start.min(v.span().start), v))
}

/// The path to the deepest key (or list entry that is a table) whose key or value holds
/// byte `at`, with that key's span.
fn path_at<'a>(table: &'a DeTable<'_>, at: usize) -> Option<(Vec<Step<'a>>, Range<usize>)> {
    table.iter().find_map(|(key, value)| {
        let inner = match value.get_ref() {
            DeValue::Table(t) => path_at(t, at),
            DeValue::Array(a) => a.iter().enumerate().find_map(|(i, v)| {
                let t = v.get_ref().as_table()?;
                let (mut path, span) = path_at(t, at)
                    .or_else(|| v.span().contains(&at).then(|| (Vec::new(), v.span())))?;
                path.insert(0, Step::Index(i));
                Some((path, span))
            }),
            _ => None,
        };
        let (mut path, span) = inner.or_else(|| {
            (key.span().contains(&at) || value.span().contains(&at))
                .then(|| (Vec::new(), key.span()))
        })?;
        path.insert(0, Step::Key(key.get_ref()));
        Some((path, span))
    })
}

/// The path of the `[header]` or `[[header]]` section that holds byte `at`: the one
/// starting last at or before it, into `best` with its start.
fn section_at<'a>(
    table: &'a DeTable<'_>,
    at: usize,
    prefix: &mut Vec<Step<'a>>,
    best: &mut Option<(usize, Vec<Step<'a>>)>,
) {
    let consider = |best: &mut Option<(usize, Vec<Step<'a>>)>, start: usize, path: &[Step<'a>]| {
        if start <= at && best.as_ref().is_none_or(|(b, _)| start >= *b) {
            *best = Some((start, path.to_vec()));
        }
    };
    for (key, value) in table.iter() {
        prefix.push(Step::Key(key.get_ref()));
        match value.get_ref() {
            DeValue::Table(t) => {
                // A header's span starts before its key; a dotted key's table at its key.
                if value.span().start < key.span().start {
                    consider(best, value.span().start, prefix);
                }
                section_at(t, at, prefix, best);
            }
            DeValue::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    if let Some(t) = v.get_ref().as_table() {
                        prefix.push(Step::Index(i));
                        consider(best, v.span().start, prefix);
                        section_at(t, at, prefix, best);
                        prefix.pop();
                    }
                }
            }
            _ => {}
        }
        prefix.pop();
    }
}

/// Turns a TOML error into a located [`ConfigError`] naming the key it is at, found in the
/// document by the error's span. A deserialization error at a key the configuration does
/// not have is an unknown key: the nearest known one is suggested.
fn parse_error(
    text: &str,
    doc: &Spanned<DeTable>,
    e: &toml::de::Error,
    deserializing: bool,
) -> ConfigError {
    let span = e.span();
    let location = span.as_ref().map(|s| line_col(text, s.start));
    let (path, key_span) = span
        .as_ref()
        .and_then(|s| path_at(doc.get_ref(), s.start))
        .or_else(|| {
            // At no key the tree has (a syntax error, such as a second `shards =`): the
            // section the error is in, and the key the error's span covers if it is one.
            let s = span.as_ref()?;
            let mut section = None;
            section_at(doc.get_ref(), s.start, &mut Vec::new(), &mut section);
            let mut path = section.map(|(_, path)| path).unwrap_or_default();
            let key = text.get(s.clone()).filter(|k| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
            path.extend(key.map(Step::Key));
            Some((path, s.clone()))
        })
        .unwrap_or_default();
    let field = field_name(&path);
    if let (true, Some((Step::Key(unknown), parent))) = (deserializing, path.split_last()) {
        let known = known_keys(parent).unwrap_or_default();
        let at_key = e.span().is_some_and(|s| s.start == key_span.start);
        if at_key && !known.is_empty() && !known.contains(unknown) {
            let suggestion = known
                .iter()
                .map(|k| (edit_distance(unknown, k), *k))
                .min()
                .filter(|&(d, _)| d <= unknown.len().max(3) / 2 + 1)
                .map(|(_, k)| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            return ConfigError {
                field,
                expected: format!("one of {}{suggestion}", known.join(", ")),
                found: format!("unknown key `{unknown}`"),
                location,
            };
        }
    }
    ConfigError {
        field,
        expected: "a value of the documented type (see docs/configuration.md)".to_string(),
        found: e.message().trim().to_string(),
        location,
    }
}

/// The keys the configuration has in the table at `path` (`[]`: the top; `classes`, 0:
/// a class), as serde's derive declares them: `SchedulerConfig` is deserialized from a
/// [`Probe`] that follows the path and records the fields of the struct it ends at.
fn known_keys(path: &[Step]) -> Option<&'static [&'static str]> {
    // List indexes are left out: every entry of a list has the same type.
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Step::Key(k) => Some(*k),
            Step::Index(_) => None,
        })
        .collect();
    let mut fields = None;
    let _ = SchedulerConfig::deserialize(Probe {
        path: &keys,
        fields: &mut fields,
    });
    fields
}

/// A deserializer that gives the struct being deserialized one key, the next of `path`,
/// and itself as that key's value (through options and lists), until the path is used up:
/// there it records the struct's fields and stops with an error.
struct Probe<'p, 'f> {
    path: &'p [&'p str],
    fields: &'f mut Option<&'static [&'static str]>,
}

fn stop() -> de::value::Error {
    de::Error::custom("probe")
}

impl<'de> de::Deserializer<'de> for Probe<'_, '_> {
    type Error = de::value::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(stop())
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.path.split_first() {
            None => {
                *self.fields = Some(fields);
                Err(stop())
            }
            Some((key, path)) => visitor.visit_map(ProbeEntry {
                key: Some(key),
                value: Some(Probe {
                    path,
                    fields: self.fields,
                }),
            }),
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_seq(ProbeEntry {
            key: None,
            value: Some(self),
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct tuple tuple_struct map enum identifier ignored_any
    }
}

/// The one key and value (or list entry) a [`Probe`] gives.
struct ProbeEntry<'p, 'f> {
    key: Option<&'p str>,
    value: Option<Probe<'p, 'f>>,
}

impl<'de> de::MapAccess<'de> for ProbeEntry<'_, '_> {
    type Error = de::value::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.key
            .take()
            .map(|k| seed.deserialize(k.into_deserializer()))
            .transpose()
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        seed.deserialize(self.value.take().ok_or_else(stop)?)
    }
}

impl<'de> de::SeqAccess<'de> for ProbeEntry<'_, '_> {
    type Error = de::value::Error;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.value.take().map(|v| seed.deserialize(v)).transpose()
    }
}

/// Levenshtein distance, for suggesting the nearest known key.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn locate(text: &str, field: &str) -> Option<(u32, u32)> {
        super::locate(text, &DeTable::parse(text).unwrap(), field)
    }

    #[test]
    fn locates_keys_in_tables_and_arrays_of_tables() {
        let text = "max_wait_ms = 5\n\n[engine]\nwatermark = 0.9\n\n[[classes]]\nname = \"A\"\n\n[[classes]]\n  name = \"B\"\n";
        assert_eq!(locate(text, "max_wait_ms"), Some((1, 1)));
        assert_eq!(locate(text, "engine.watermark"), Some((4, 1)));
        assert_eq!(locate(text, "classes[1].name"), Some((10, 3)));
        assert_eq!(
            locate(text, "classes[1].ring_capacity"),
            Some((9, 1)),
            "falls back to the header"
        );
        assert_eq!(locate(text, "preemption.enabled"), None);
        assert_eq!(
            locate("engine.watermark = 2\n", "engine.watermark"),
            Some((1, 8)),
            "the key's own part of a dotted key"
        );
        assert_eq!(
            locate(
                "[slo]\nclasses = [{ ttft = { quantile = 2 } }]\n",
                "slo.classes[0].ttft.quantile"
            ),
            Some((2, 23)),
            "a key inside inline tables"
        );
    }

    #[test]
    fn field_paths_split_into_steps_and_back() {
        let field = "slo.classes[10].ttft.bound_ms";
        let path = steps(field);
        assert_eq!(
            path,
            [
                Step::Key("slo"),
                Step::Key("classes"),
                Step::Index(10),
                Step::Key("ttft"),
                Step::Key("bound_ms")
            ]
        );
        assert_eq!(field_name(&path), field);
    }

    #[test]
    fn known_keys_follow_the_path_through_lists_and_options() {
        assert!(known_keys(&[]).unwrap().contains(&"max_wait_ms"));
        let class = known_keys(&[Step::Key("classes"), Step::Index(3)]).unwrap();
        assert!(class.contains(&"ring_capacity"), "{class:?}");
        let target = known_keys(&[
            Step::Key("slo"),
            Step::Key("classes"),
            Step::Index(0),
            Step::Key("ttft"),
        ])
        .unwrap();
        assert!(target.contains(&"bound_ms"), "{target:?}");
        assert_eq!(known_keys(&[Step::Key("max_wait_ms")]), None);
        assert_eq!(known_keys(&[Step::Key("nonesuch")]), None);
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("max_wiat_ms", "max_wait_ms"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
