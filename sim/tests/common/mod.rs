//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use triage_sim::class::default_slos;
use triage_sim::engine::EngineConfig;
use triage_sim::policies::{PolicyContext, SimRequest};

/// The repository's `data/` directory.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// A request.
pub fn req(id: u64, class: u8, arrival: f64, prompt: u32, output: u32) -> SimRequest {
    SimRequest {
        id,
        class,
        arrival,
        prompt_tokens: prompt,
        output_tokens: output,
        tenant: None,
    }
}

/// Policy context matching `cfg`.
pub fn ctx_for(cfg: &EngineConfig) -> PolicyContext {
    PolicyContext {
        max_model_len: cfg.max_model_len,
        total_blocks: cfg.total_blocks,
        block_size: cfg.block_size,
        watermark_blocks: cfg.watermark_blocks,
        slos: default_slos(),
        seed: 1,
        triage_config: None,
    }
}
