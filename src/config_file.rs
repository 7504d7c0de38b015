//! Reading a [`SchedulerConfig`] from TOML text: parse, validate, and point every error at
//! its line and column, with the nearest known key suggested for a misspelt one.

use crate::config::SchedulerConfig;
use crate::error::ConfigError;
use crate::slo::ClassSlo;
use std::path::Path;

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
        let mut config: SchedulerConfig =
            toml::from_str(text).map_err(|e| parse_error(text, &e))?;
        if !sets_slo_classes(text) {
            // Serde filled in the three default classes' targets, by position; the rule is
            // by name, for however many classes the file has.
            config.slo.classes = config
                .classes
                .iter()
                .map(|c| ClassSlo::default_named(&c.name))
                .collect();
        }
        config.validate().map_err(|mut e| {
            e.location = locate(text, &e.field);
            e
        })?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
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
/// key in `[slo]`), even an empty list. Called on text that has already parsed.
fn sets_slo_classes(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|doc| {
        doc.get("slo")
            .and_then(toml::Value::as_table)
            .is_some_and(|slo| slo.contains_key("classes"))
    })
}

/// 1-based (line, column) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (u32, u32) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(at, |nl| at - nl - 1) + 1;
    (line as u32, column as u32)
}

/// Turns a TOML/serde error into a located [`ConfigError`], naming the key and suggesting
/// the nearest known one for an unknown key.
fn parse_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    let location = e.span().map(|s| line_col(text, s.start));
    let key_at = e
        .span()
        .map(|s| key_on_line(text, s.start))
        .unwrap_or_default();
    let table = e
        .span()
        .map(|s| table_at(text, s.start))
        .unwrap_or_default();
    let field = |key: &str| {
        if key.is_empty() || table == key || table.ends_with(&format!(".{key}")) {
            // No key, or an unknown table reported at its own header: the table is the field.
            if table.is_empty() {
                key.to_string()
            } else {
                table.clone()
            }
        } else if table.is_empty() {
            key.to_string()
        } else {
            format!("{table}.{key}")
        }
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (unknown, rest) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        let suggestion = known
            .iter()
            .map(|k| (edit_distance(unknown, k), *k))
            .min()
            .filter(|&(d, _)| d <= unknown.len().max(3) / 2 + 1)
            .map(|(_, k)| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        return ConfigError {
            field: field(unknown),
            expected: format!("one of {}{suggestion}", known.join(", ")),
            found: format!("unknown key `{unknown}`"),
            location,
        };
    }
    ConfigError {
        field: field(&key_at),
        expected: "a value of the documented type (see docs/configuration.md)".to_string(),
        found: message,
        location,
    }
}

/// The key of the `key = value` line holding byte `at`, if any.
fn key_on_line(text: &str, at: usize) -> String {
    let start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((k, _)) if !line.trim_start().starts_with('[') => {
            k.trim().trim_matches('"').to_string()
        }
        _ => String::new(),
    }
}

/// One line of a TOML text with the section it belongs to.
struct Line<'a> {
    /// Byte offset of the line's start.
    offset: usize,
    text: &'a str,
    /// The section path (`engine`, `classes[1]`; empty at the top), array tables indexed.
    table: String,
    /// Whether the line is the section's header.
    header: bool,
}

/// Every line with its section, counting `[[array]]` headers into indexes.
fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut table = String::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let h = header(line);
        if let Some(h) = &h {
            table = match h {
                Header::Table(name) => name.clone(),
                Header::Array(name) => {
                    let i = match counts.iter_mut().find(|(n, _)| n == name) {
                        Some((_, c)) => {
                            *c += 1;
                            *c
                        }
                        None => {
                            counts.push((name.clone(), 0));
                            0
                        }
                    };
                    format!("{name}[{i}]")
                }
            };
        }
        out.push(Line {
            offset,
            text: line,
            table: table.clone(),
            header: h.is_some(),
        });
        offset += line.len();
    }
    out
}

/// The table (`engine`, `classes[1]`) whose section holds byte `at`.
fn table_at(text: &str, at: usize) -> String {
    lines(text)
        .into_iter()
        .take_while(|l| l.offset <= at)
        .last()
        .map(|l| l.table)
        .unwrap_or_default()
}

enum Header {
    Table(String),
    Array(String),
}

fn header(line: &str) -> Option<Header> {
    let t = line.trim();
    if let Some(inner) = t.strip_prefix("[[") {
        return Some(Header::Array(inner.split("]]").next()?.trim().to_string()));
    }
    if let Some(inner) = t.strip_prefix('[') {
        return Some(Header::Table(inner.split(']').next()?.trim().to_string()));
    }
    None
}

/// Finds the line and column of the key a field path names (`classes[2].promote_after_ms`,
/// `engine.watermark`, `max_wait_ms`): the key itself if the file sets it, else its table's
/// header; `None` if the file sets neither (the value came from the defaults).
fn locate(text: &str, field: &str) -> Option<(u32, u32)> {
    // A key inside an inline table (`ttft = { quantile = 2 }`) is located at its parent
    // key: try the path, then ever shorter prefixes.
    let mut path = field;
    loop {
        if let Some(at) = locate_exact(text, path) {
            return Some(at);
        }
        path = path.rsplit_once('.')?.0;
    }
}

fn locate_exact(text: &str, field: &str) -> Option<(u32, u32)> {
    let (table, key) = match field.rsplit_once('.') {
        Some((t, k)) => (t.to_string(), k.to_string()),
        None if field.ends_with(']') => (field.to_string(), String::new()),
        None => (String::new(), field.to_string()),
    };
    // `key = ...` at the start of a line (after indentation): the line and column of the key.
    let key_at = |l: &Line, key: &str| {
        let t = l.text.trim_start();
        let rest = t.strip_prefix(key)?;
        rest.trim_start()
            .starts_with('=')
            .then(|| line_col(text, l.offset + (l.text.len() - t.len())))
    };
    let mut header_at = None;
    for l in lines(text) {
        if l.header {
            let current = &l.table;
            if *current == table
                || current.split('[').next() == Some(field)
                || (key.is_empty() && table.starts_with(&format!("{current}[")))
            {
                header_at.get_or_insert(l.offset + (l.text.len() - l.text.trim_start().len()));
            }
        } else if l.table == table && !key.is_empty() {
            if let Some(at) = key_at(&l, &key) {
                return Some(at);
            }
        } else if l.table.is_empty() && !table.is_empty() && !table.contains('[') {
            // A dotted key at the top: `engine.watermark = 0.02`.
            if let Some(at) = key_at(&l, field) {
                return Some(at);
            }
        }
    }
    header_at.map(|at| line_col(text, at))
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
            Some((1, 1))
        );
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("max_wiat_ms", "max_wait_ms"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
