//! How long a text prompt is, in tokens, without a real tokenizer.
//!
//! The rule: every maximal run of letters and digits is one token, and every other
//! character that is not whitespace (punctuation, symbols) is one token on its own.
//! `"Hello, world!"` is 4 tokens (`Hello` `,` `world` `!`). Real BPE tokenizers give
//! about as many tokens for English prose (long words split into several, common words
//! with their leading space one), which is all the scheduler needs: a length.
//!
//! A prompt given as a list of token ids is as long as the list; no tokenizer is used.

/// Tokens in `text` by the rule above.
///
/// ```
/// assert_eq!(triage_serve::tokenizer::count_tokens("Hello, world!"), 4);
/// assert_eq!(triage_serve::tokenizer::count_tokens("  "), 0);
/// ```
pub fn count_tokens(text: &str) -> usize {
    let mut n = 0;
    let mut in_word = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if !in_word {
                n += 1;
                in_word = true;
            }
        } else {
            in_word = false;
            if !c.is_whitespace() {
                n += 1;
            }
        }
    }
    n
}

/// Tokens a chat message adds besides its content: its role and the template's markers
/// around it (the figure Llama-2's and ChatML's templates give, roughly).
pub const CHAT_MESSAGE_OVERHEAD: usize = 4;

/// The text the engine "generates" as token `index` (0-based): `tok1 `, `tok2 `, ...
pub fn token_text(index: u32) -> String {
    format!("tok{} ", index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_punctuation() {
        assert_eq!(count_tokens("a b  c"), 3);
        assert_eq!(count_tokens("don't"), 3);
        assert_eq!(count_tokens("x1y2, ok."), 4);
        assert_eq!(count_tokens("héllo wörld"), 2);
        assert_eq!(token_text(0), "tok1 ");
    }
}
