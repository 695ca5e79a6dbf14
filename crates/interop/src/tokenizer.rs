//! The HuggingFace tokenizer lives in `switchyard_data` (the trainer tokenizes with it too);
//! re-exported here, where imported models are loaded.

pub use switchyard_data::HfTokenizer;
