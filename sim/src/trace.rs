//! Trace readers: Azure LLM inference CSV and Mooncake JSONL.
//!
//! Both produce [`TraceRow`]s with arrival times in seconds relative to the
//! trace's first row. Errors name the file, the 1-based line and the field.

use std::fmt;
use std::path::{Path, PathBuf};

/// One request of a trace, before class assignment and scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceRow {
    /// Arrival time, seconds since the trace's first row.
    pub time_s: f64,
    /// Prompt (context) tokens.
    pub prompt_tokens: u32,
    /// Output (generated) tokens.
    pub output_tokens: u32,
}

/// A parsed trace file.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Requests in file order, times relative to the first row.
    pub rows: Vec<TraceRow>,
    /// Wall-clock time of the first row in 100 ns ticks since 1970 (Azure traces,
    /// no time zone), so traces of the same period can be aligned when merged.
    pub origin_100ns: Option<i64>,
}

/// Why a trace could not be read.
#[derive(Debug)]
pub enum TraceError {
    /// The file could not be opened or read.
    Io {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A field is missing or malformed.
    Field {
        /// File path.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Field (column / key) name.
        field: String,
        /// What is wrong, including the offending text.
        problem: String,
    },
    /// The header line is not the expected one.
    Header {
        /// File path.
        path: PathBuf,
        /// Expected header.
        expected: String,
        /// Found header.
        found: String,
    },
    /// The file holds no requests.
    Empty {
        /// File path.
        path: PathBuf,
    },
    /// The file extension names no known format.
    UnknownFormat {
        /// File path.
        path: PathBuf,
    },
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Field {
                path,
                line,
                field,
                problem,
            } => {
                write!(f, "{}:{line}: field `{field}`: {problem}", path.display())
            }
            Self::Header {
                path,
                expected,
                found,
            } => {
                write!(
                    f,
                    "{}:1: expected header `{expected}`, found `{found}`",
                    path.display()
                )
            }
            Self::Empty { path } => write!(f, "{}: trace has no requests", path.display()),
            Self::UnknownFormat { path } => write!(
                f,
                "{}: unknown trace format (expected an Azure `.csv` or a Mooncake `.jsonl` file)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TraceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Expected header of an Azure 2023 trace.
pub const AZURE_HEADER: &str = "TIMESTAMP,ContextTokens,GeneratedTokens";

fn read(path: &Path) -> Result<String, TraceError> {
    std::fs::read_to_string(path).map_err(|source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Read a trace, choosing the format by extension (`.csv` Azure, `.jsonl`/`.json` Mooncake).
pub fn read_trace_file(path: &Path) -> Result<Trace, TraceError> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => read_azure_csv(path),
        Some("jsonl") | Some("json") => read_mooncake_jsonl(path),
        _ => Err(TraceError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// Read an Azure LLM inference trace CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`).
pub fn read_azure_csv(path: &Path) -> Result<Trace, TraceError> {
    parse_azure_csv(&read(path)?, path)
}

/// Parse the text of an Azure CSV trace (see [`read_azure_csv`]).
pub fn parse_azure_csv(text: &str, path: &Path) -> Result<Trace, TraceError> {
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap_or("")
        .trim()
        .trim_start_matches('\u{feff}');
    if header != AZURE_HEADER {
        return Err(TraceError::Header {
            path: path.to_path_buf(),
            expected: AZURE_HEADER.into(),
            found: header.into(),
        });
    }
    let mut ticks = Vec::new();
    let mut rows = Vec::new();
    for (i, raw) in lines.enumerate() {
        let line = i + 2;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let err = |field: &str, problem: String| TraceError::Field {
            path: path.to_path_buf(),
            line,
            field: field.to_string(),
            problem,
        };
        let mut parts = raw.split(',');
        let ts = parts.next().unwrap_or("");
        let ctx = parts
            .next()
            .ok_or_else(|| err("ContextTokens", "missing".into()))?;
        let gen = parts
            .next()
            .ok_or_else(|| err("GeneratedTokens", "missing".into()))?;
        if parts.next().is_some() {
            return Err(err(
                "GeneratedTokens",
                "unexpected extra fields after it".into(),
            ));
        }
        let t = parse_timestamp_ticks(ts.trim()).ok_or_else(|| {
            err(
                "TIMESTAMP",
                format!("cannot parse {ts:?} as `YYYY-MM-DD HH:MM:SS[.fffffff]`"),
            )
        })?;
        let prompt = parse_tokens(ctx).map_err(|p| err("ContextTokens", p))?;
        let output = parse_output(gen).map_err(|p| err("GeneratedTokens", p))?;
        ticks.push(t);
        rows.push(TraceRow {
            time_s: 0.0,
            prompt_tokens: prompt,
            output_tokens: output,
        });
    }
    let Some(&first) = ticks.first() else {
        return Err(TraceError::Empty {
            path: path.to_path_buf(),
        });
    };
    for (row, t) in rows.iter_mut().zip(&ticks) {
        row.time_s = (t - first) as f64 / 1e7;
    }
    Ok(Trace {
        rows,
        origin_100ns: Some(first),
    })
}

fn parse_tokens(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1, found 0".into()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!(
            "cannot parse {:?} as a non-negative integer",
            s.trim()
        )),
    }
}

fn parse_output(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| format!("cannot parse {:?} as a non-negative integer", s.trim()))
}

/// Parse `YYYY-MM-DD HH:MM:SS[.f{1,9}]` into 100 ns ticks since 1970-01-01 (no time zone).
pub fn parse_timestamp_ticks(s: &str) -> Option<i64> {
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let mo: i64 = d.next()?.parse().ok()?;
    let da: i64 = d.next()?.parse().ok()?;
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut t = hms.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let se: i64 = t.next()?.parse().ok()?;
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Fraction to 100 ns ticks (7 digits), truncating finer digits.
    let mut f7 = String::from(frac);
    while f7.len() < 7 {
        f7.push('0');
    }
    let ticks_frac: i64 = f7[..7].parse().ok()?;
    let days = days_from_civil(y, mo, da);
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 10_000_000) + ticks_frac)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Read a Mooncake trace (JSONL: `timestamp` ms, `input_length`, `output_length`).
pub fn read_mooncake_jsonl(path: &Path) -> Result<Trace, TraceError> {
    parse_mooncake_jsonl(&read(path)?, path)
}

/// Parse the text of a Mooncake JSONL trace (see [`read_mooncake_jsonl`]).
pub fn parse_mooncake_jsonl(text: &str, path: &Path) -> Result<Trace, TraceError> {
    let mut rows = Vec::new();
    let mut first_ms: Option<f64> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let err = |field: &str, problem: String| TraceError::Field {
            path: path.to_path_buf(),
            line,
            field: field.to_string(),
            problem,
        };
        let v: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| err("(line)", format!("not valid JSON: {e}")))?;
        let get = |key: &str| -> Result<f64, TraceError> {
            match v.get(key) {
                Some(x) => x
                    .as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .ok_or_else(|| err(key, format!("expected a non-negative number, found {x}"))),
                None => Err(err(key, "missing".into())),
            }
        };
        let ts = get("timestamp")?;
        let input = get("input_length")?;
        let output = get("output_length")?;
        let to_u32 = |key: &str, x: f64| -> Result<u32, TraceError> {
            if x.fract() != 0.0 || x > f64::from(u32::MAX) {
                Err(err(
                    key,
                    format!("expected an integer token count, found {x}"),
                ))
            } else {
                Ok(x as u32)
            }
        };
        let prompt = to_u32("input_length", input)?;
        if prompt == 0 {
            return Err(err("input_length", "must be at least 1, found 0".into()));
        }
        let output = to_u32("output_length", output)?;
        let base = *first_ms.get_or_insert(ts);
        rows.push(TraceRow {
            time_s: (ts - base) / 1e3,
            prompt_tokens: prompt,
            output_tokens: output,
        });
    }
    if rows.is_empty() {
        return Err(TraceError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Trace {
        rows,
        origin_100ns: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_parses_and_rebases_time() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                    2023-11-16 18:15:46.6805900,374,44\n\
                    2023-11-16 18:15:50.9951690,396,109\n\
                    2023-11-17 00:00:00,1,1\n";
        let rows = parse_azure_csv(text, Path::new("t.csv")).unwrap().rows;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].time_s, 0.0);
        assert!((rows[1].time_s - 4.314579).abs() < 1e-9);
        assert!((rows[2].time_s - (5.0 * 3600.0 + 44.0 * 60.0 + 13.31941)).abs() < 1e-6);
        assert_eq!((rows[1].prompt_tokens, rows[1].output_tokens), (396, 109));
    }

    #[test]
    fn azure_error_names_file_line_field() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:47,x7,44\n";
        let e = parse_azure_csv(text, Path::new("a.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a.csv:3: field `ContextTokens`"), "{e}");
        let e = parse_azure_csv("TS,a\n", Path::new("a.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected header"), "{e}");
        let e = parse_azure_csv(
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-13-16 18:15:46,1,1\n",
            Path::new("a.csv"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("a.csv:2: field `TIMESTAMP`"), "{e}");
    }

    #[test]
    fn mooncake_parses_and_reports_fields() {
        let text = "{\"timestamp\": 1000, \"input_length\": 6758, \"output_length\": 500, \"hash_ids\": [0]}\n\
                    {\"timestamp\": 4000, \"input_length\": 10, \"output_length\": 3}\n";
        let rows = parse_mooncake_jsonl(text, Path::new("m.jsonl"))
            .unwrap()
            .rows;
        assert_eq!(
            rows[0],
            TraceRow {
                time_s: 0.0,
                prompt_tokens: 6758,
                output_tokens: 500
            }
        );
        assert_eq!(rows[1].time_s, 3.0);
        let bad = "{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1}\n{\"timestamp\": 0, \"output_length\": 1}\n";
        let e = parse_mooncake_jsonl(bad, Path::new("m.jsonl"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "m.jsonl:2: field `input_length`: missing");
        let e = parse_mooncake_jsonl("{\"timestamp\": \"x\"}", Path::new("m.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m.jsonl:1: field `timestamp`"), "{e}");
    }
}
