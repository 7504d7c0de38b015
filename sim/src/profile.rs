//! Reader for Vidur's per-layer operator profiles (`data/profiles/vidur_*_mlp.csv`).
//!
//! Produces, for every TP=1 row, the whole-model *linear* time of one forward
//! pass: the sum of the per-layer operator medians times the number of layers,
//! plus the embedding (profiled once per model).

use std::fmt;
use std::path::{Path, PathBuf};

/// Per-layer operators summed into the linear part (everything but attention).
pub const LAYER_OPS: [&str; 9] = [
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
];

/// One profile point: batched tokens and whole-model linear time in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfilePoint {
    /// `num_tokens` of the row.
    pub num_tokens: u32,
    /// `n_layers * sum(per-layer op medians) + emb median`, milliseconds.
    pub linear_ms: f64,
}

/// Why a profile could not be read.
#[derive(Debug)]
pub enum ProfileError {
    /// The file could not be opened or read.
    Io {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A required column is missing from the header.
    MissingColumn {
        /// File path.
        path: PathBuf,
        /// Column name.
        column: String,
    },
    /// A field does not parse.
    BadField {
        /// File path.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Column name.
        field: String,
        /// Offending text.
        value: String,
    },
    /// No TP=1 rows.
    Empty {
        /// File path.
        path: PathBuf,
    },
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::MissingColumn { path, column } => {
                write!(f, "{}: header has no column `{column}`", path.display())
            }
            Self::BadField {
                path,
                line,
                field,
                value,
            } => write!(
                f,
                "{}:{line}: field `{field}`: cannot parse {value:?} as a number",
                path.display()
            ),
            Self::Empty { path } => write!(
                f,
                "{}: no rows with num_tensor_parallel_workers = 1",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ProfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Read a Vidur `mlp.csv` file and return its TP=1 points sorted by `num_tokens`.
pub fn read_profile(path: &Path, n_layers: u32) -> Result<Vec<ProfilePoint>, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_profile(&text, path, n_layers)
}

/// Parse the text of a Vidur `mlp.csv` (see [`read_profile`]).
pub fn parse_profile(
    text: &str,
    path: &Path,
    n_layers: u32,
) -> Result<Vec<ProfilePoint>, ProfileError> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| ProfileError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
            })
    };
    let op_cols: Vec<(String, usize)> = LAYER_OPS
        .iter()
        .map(|op| {
            let name = format!("time_stats.{op}.median");
            col(&name).map(|i| (name, i))
        })
        .collect::<Result<_, _>>()?;
    let emb = (
        "time_stats.emb.median".to_string(),
        col("time_stats.emb.median")?,
    );
    let tokens = ("num_tokens".to_string(), col("num_tokens")?);
    let tp = (
        "num_tensor_parallel_workers".to_string(),
        col("num_tensor_parallel_workers")?,
    );

    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let num = |(name, idx): &(String, usize)| -> Result<f64, ProfileError> {
            let raw = fields.get(*idx).copied().unwrap_or("");
            raw.trim()
                .parse::<f64>()
                .map_err(|_| ProfileError::BadField {
                    path: path.to_path_buf(),
                    line: line_no,
                    field: name.clone(),
                    value: raw.to_string(),
                })
        };
        if num(&tp)? != 1.0 {
            continue;
        }
        let per_layer: f64 = op_cols.iter().map(&num).sum::<Result<f64, _>>()?;
        let n = num(&tokens)?;
        if n < 1.0 || n.fract() != 0.0 {
            return Err(ProfileError::BadField {
                path: path.to_path_buf(),
                line: line_no,
                field: tokens.0.clone(),
                value: fields.get(tokens.1).copied().unwrap_or("").to_string(),
            });
        }
        out.push(ProfilePoint {
            num_tokens: n as u32,
            linear_ms: per_layer * f64::from(n_layers) + num(&emb)?,
        });
    }
    if out.is_empty() {
        return Err(ProfileError::Empty {
            path: path.to_path_buf(),
        });
    }
    out.sort_by(|a, b| {
        a.num_tokens
            .cmp(&b.num_tokens)
            .then(a.linear_ms.total_cmp(&b.linear_ms))
    });
    Ok(out)
}
