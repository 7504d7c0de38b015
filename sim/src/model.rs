//! Model + GPU configurations the simulator knows, and their KV-cache capacity.
//!
//! KV capacity follows vLLM's memory accounting: of the GPU memory,
//! `gpu_memory_utilization` (0.9) may be used; from that, the fp16 weights and an
//! activation reserve (the peak of vLLM's profiling forward pass, assumed
//! 1.25 GiB here) are subtracted, and the rest is cut into KV blocks of
//! `block_size` tokens x all layers x (K + V).

use serde::Serialize;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One simulated model on one GPU (tensor parallel = 1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    /// Registry name, e.g. `llama2-7b-a100`.
    pub name: &'static str,
    /// Human description.
    pub description: &'static str,
    /// File name of the Vidur profile in `data/profiles/`.
    pub profile_file: &'static str,
    /// Transformer layers.
    pub n_layers: u32,
    /// Parameter count (weights are fp16: 2 bytes each).
    pub params: u64,
    /// K + V bytes per token per layer (fp16): `2 * n_kv_heads * head_dim * 2`.
    pub kv_bytes_per_token_layer: u64,
    /// Maximum context (prompt + output) in tokens.
    pub max_model_len: u32,
    /// GPU name.
    pub gpu: &'static str,
    /// GPU memory in bytes.
    pub gpu_mem_bytes: u64,
    /// Effective HBM bandwidth for decode attention, bytes/s.
    pub hbm_bytes_per_s: f64,
    /// vLLM `gpu_memory_utilization`.
    pub gpu_memory_utilization: f64,
    /// Memory kept for activations / workspace, bytes.
    pub activation_reserve_bytes: u64,
    /// Tokens per KV block.
    pub block_size: u32,
}

impl ModelSpec {
    /// fp16 weight bytes.
    pub fn weight_bytes(&self) -> u64 {
        self.params * 2
    }

    /// Bytes of one KV block (all layers, K and V).
    pub fn kv_block_bytes(&self) -> u64 {
        u64::from(self.block_size) * u64::from(self.n_layers) * self.kv_bytes_per_token_layer
    }

    /// KV blocks that fit: `floor((mem * util - weights - activations) / block_bytes)`.
    pub fn num_kv_blocks(&self) -> u32 {
        let usable = self.gpu_mem_bytes as f64 * self.gpu_memory_utilization
            - self.weight_bytes() as f64
            - self.activation_reserve_bytes as f64;
        (usable / self.kv_block_bytes() as f64).floor().max(0.0) as u32
    }
}

fn base(name: &'static str) -> ModelSpec {
    ModelSpec {
        name,
        description: "",
        profile_file: "",
        n_layers: 32,
        params: 6_738_415_616,
        kv_bytes_per_token_layer: 2 * 32 * 128 * 2,
        max_model_len: 4096,
        gpu: "A100-80GB",
        gpu_mem_bytes: (80.0 * GIB) as u64,
        hbm_bytes_per_s: 1.9e12,
        gpu_memory_utilization: 0.9,
        activation_reserve_bytes: (1.25 * GIB) as u64,
        block_size: 16,
    }
}

/// All known models, in display order.
pub fn all_models() -> Vec<ModelSpec> {
    vec![
        ModelSpec {
            description: "Llama-2-7B fp16 on one A100 80GB (MHA, 16 KiB KV/token/layer, 4k context)",
            profile_file: "vidur_a100_llama2-7b_mlp.csv",
            ..base("llama2-7b-a100")
        },
        ModelSpec {
            description: "Llama-2-7B fp16 on one H100 80GB (MHA, 16 KiB KV/token/layer, 4k context)",
            profile_file: "vidur_h100_llama2-7b_mlp.csv",
            gpu: "H100-80GB",
            hbm_bytes_per_s: 3.0e12,
            ..base("llama2-7b-h100")
        },
        ModelSpec {
            description: "Llama-3-8B fp16 on one A100 80GB (GQA 8 KV heads, 4 KiB KV/token/layer, 8k context)",
            profile_file: "vidur_a100_llama3-8b_mlp.csv",
            params: 8_030_261_248,
            kv_bytes_per_token_layer: 2 * 8 * 128 * 2,
            max_model_len: 8192,
            ..base("llama3-8b-a100")
        },
    ]
}

/// Names of all known models.
pub fn model_names() -> Vec<&'static str> {
    all_models().iter().map(|m| m.name).collect()
}

/// Look a model up by name; the error lists the valid names.
pub fn model_by_name(name: &str) -> Result<ModelSpec, String> {
    all_models()
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| {
            format!(
                "unknown model `{name}`; valid models: {}",
                model_names().join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_capacity_matches_vllm_ballpark() {
        let m = model_by_name("llama2-7b-a100").unwrap();
        assert_eq!(m.kv_block_bytes(), 8 * 1024 * 1024);
        let blocks = m.num_kv_blocks();
        assert!((7400..=7500).contains(&blocks), "{blocks}");
        let l3 = model_by_name("llama3-8b-a100").unwrap();
        assert_eq!(l3.kv_block_bytes(), 2 * 1024 * 1024);
        assert!(l3.num_kv_blocks() > 28_000);
        assert!(model_by_name("gpt-5")
            .unwrap_err()
            .contains("llama2-7b-a100"));
    }
}
