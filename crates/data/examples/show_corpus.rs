//! Prints the start of one document per domain of the built-in corpus and the dataset sizes.
//!
//! Run with: cargo run -p switchyard-data --example show_corpus

use switchyard_data::{generate, ByteTokenizer, CorpusConfig, Dataset, DatasetConfig};

/// Bytes of each sample to print; cut back to a character boundary for `cjk`.
const PREVIEW_BYTES: usize = 240;

fn main() -> Result<(), switchyard_data::DataError> {
    let docs = generate(&CorpusConfig::default());
    let mut seen = Vec::new();
    for doc in &docs {
        if seen.contains(&doc.domain) {
            continue;
        }
        seen.push(doc.domain.clone());
        let mut end = PREVIEW_BYTES.min(doc.text.len());
        while !doc.text.is_char_boundary(end) {
            end -= 1;
        }
        println!("=== {} ===\n{}\n", doc.domain, &doc.text[..end]);
    }

    let data = Dataset::build(&docs, &ByteTokenizer, &DatasetConfig::default())?;
    println!(
        "train: {} tokens, {} windows",
        data.train.tokens().len(),
        data.train.num_windows()
    );
    for (name, batch) in data.valid_batches() {
        println!("valid {name}: {} windows", batch.batch_size);
    }
    Ok(())
}
