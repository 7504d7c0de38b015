//! Per-iteration budget accounting shared by the baseline policies.
//!
//! A [`Budget`] starts from an [`EngineView`] and is debited as a policy fills the
//! batch: running-request slots (`max_num_seqs`), batched tokens and free KV blocks.
//! Admissions of waiting requests must leave `watermark_blocks` free (vLLM's
//! watermark); growth of running requests may use every free block.

use crate::policies::{EngineView, RunningView};

/// Blocks needed to hold `tokens` tokens.
pub fn blocks_for(tokens: u32, block_size: u32) -> u32 {
    tokens.div_ceil(block_size.max(1))
}

/// Extra blocks `rv` needs to compute `n` more tokens.
pub fn growth_blocks(rv: &RunningView, n: u32, block_size: u32) -> u32 {
    blocks_for(rv.computed_tokens + n, block_size).saturating_sub(rv.blocks)
}

/// Why something does not fit this iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Short {
    /// `max_num_seqs` reached.
    Seqs,
    /// No tokens left in the iteration's budget.
    Tokens,
    /// Not enough free KV blocks (respecting the watermark for admissions).
    Blocks,
}

/// Remaining resources of the iteration being planned.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Running-request slots left.
    pub seqs_left: u32,
    /// Batched tokens left.
    pub tokens_left: u32,
    /// Free KV blocks left.
    pub free_blocks: u32,
    /// Blocks admissions must leave free.
    pub watermark_blocks: u32,
    /// Tokens per block.
    pub block_size: u32,
}

impl Budget {
    /// The full budget of the iteration described by `view`.
    pub fn from_view(view: &EngineView) -> Self {
        Self {
            seqs_left: view.max_num_seqs.saturating_sub(view.running.len() as u32),
            tokens_left: view.token_budget,
            free_blocks: view.free_blocks,
            watermark_blocks: view.watermark_blocks,
            block_size: view.block_size,
        }
    }

    /// Try to schedule running request `rv`: it gets `min(wanted, tokens left)` tokens.
    /// Returns `(tokens, blocks allocated)`.
    pub fn try_run(&mut self, rv: &RunningView) -> Result<(u32, u32), Short> {
        let n = rv.wanted_tokens().min(self.tokens_left);
        if n == 0 {
            return Err(Short::Tokens);
        }
        let extra = growth_blocks(rv, n, self.block_size);
        if extra > self.free_blocks {
            return Err(Short::Blocks);
        }
        self.tokens_left -= n;
        self.free_blocks -= extra;
        Ok((n, extra))
    }

    /// Give back what a successful [`Budget::try_run`] took.
    pub fn undo_run(&mut self, tokens: u32, blocks: u32) {
        self.tokens_left += tokens;
        self.free_blocks += blocks;
    }

    /// Account for preempting running request `rv`: its blocks and its slot come back.
    pub fn release(&mut self, rv: &RunningView) {
        self.free_blocks += rv.blocks;
        self.seqs_left += 1;
    }

    /// Whether a request of `prompt_tokens` (to prefill from scratch) could ever be
    /// admitted on an otherwise empty engine with `total_blocks` blocks.
    pub fn fits_ever(
        prompt_tokens: u32,
        total_blocks: u32,
        watermark_blocks: u32,
        block_size: u32,
    ) -> bool {
        blocks_for(prompt_tokens, block_size) + watermark_blocks <= total_blocks
    }

    /// Try to admit a waiting request that must prefill `prefill_tokens` tokens.
    /// Chunked prefill: the first chunk is `min(prefill_tokens, tokens left)`; KV
    /// blocks for the whole prompt are reserved, keeping the watermark free.
    /// Returns the chunk.
    pub fn try_start(&mut self, prefill_tokens: u32) -> Result<u32, Short> {
        if self.seqs_left == 0 {
            return Err(Short::Seqs);
        }
        if self.tokens_left == 0 {
            return Err(Short::Tokens);
        }
        let need = blocks_for(prefill_tokens, self.block_size);
        if need + self.watermark_blocks > self.free_blocks {
            return Err(Short::Blocks);
        }
        let chunk = prefill_tokens.min(self.tokens_left);
        self.seqs_left -= 1;
        self.tokens_left -= chunk;
        self.free_blocks -= need;
        Ok(chunk)
    }
}
