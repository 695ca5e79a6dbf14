//! Tokenizers: the small [`Tokenizer`] trait the dataset code is written against, and the
//! default byte-level [`ByteTokenizer`]. A HuggingFace `tokenizer.json` is
//! [`crate::HfTokenizer`].

/// Ids 0..=255 are the raw bytes; the specials follow them.
pub const BYTE_VOCAB: usize = 256;
/// Beginning of a sequence, for prompts at generation time.
pub const BOS: u32 = 256;
/// End of document; packing puts one after every document, so it is also the separator.
pub const EOS: u32 = 257;
/// Padding, for callers that batch variable-length prompts; packing never needs it.
pub const PAD: u32 = 258;
pub const BYTE_VOCAB_SIZE: usize = 259;

pub trait Tokenizer {
    fn encode(&self, text: &str) -> Vec<u32>;
    /// Special tokens are dropped; text that is not valid UTF-8 is decoded lossily (U+FFFD),
    /// because a model can emit any byte sequence.
    fn decode(&self, ids: &[u32]) -> String;
    fn vocab_size(&self) -> usize;
    fn bos(&self) -> u32;
    fn eos(&self) -> u32;
    /// Not every tokenizer defines one (many HF tokenizers do not).
    fn pad(&self) -> Option<u32> {
        None
    }
}

/// UTF-8 bytes as tokens; no training, no files, every string round-trips.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl Tokenizer for ByteTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    fn decode(&self, ids: &[u32]) -> String {
        // Ids at or above 256 are specials (or out of range) and carry no bytes.
        let bytes: Vec<u8> = ids.iter().filter_map(|&id| u8::try_from(id).ok()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn vocab_size(&self) -> usize {
        BYTE_VOCAB_SIZE
    }

    fn bos(&self) -> u32 {
        BOS
    }

    fn eos(&self) -> u32 {
        EOS
    }

    fn pad(&self) -> Option<u32> {
        Some(PAD)
    }
}
