//! The byte-level tokenizer and the `Tokenizer` trait object.

use switchyard_data::tokenizer::{BOS, BYTE_VOCAB_SIZE, EOS, PAD};
use switchyard_data::{ByteTokenizer, Tokenizer};

#[test]
fn vocab_is_256_bytes_plus_three_specials() {
    let t = ByteTokenizer;
    assert_eq!(t.vocab_size(), 259);
    assert_eq!(BYTE_VOCAB_SIZE, 259);
    assert_eq!((t.bos(), t.eos(), t.pad()), (BOS, EOS, Some(PAD)));
    assert_eq!((BOS, EOS, PAD), (256, 257, 258));
}

#[test]
fn round_trips_ascii_and_multibyte_text() {
    let t = ByteTokenizer;
    for text in [
        "",
        "hello, world\n",
        "37+48=85;",
        "我们今天在公园看书。",
        "tab\tand \u{1F600}",
    ] {
        let ids = t.encode(text);
        assert_eq!(ids.len(), text.len());
        assert!(ids.iter().all(|&id| id < 256));
        assert_eq!(t.decode(&ids), text);
    }
    assert_eq!(ByteTokenizer.encode("中"), vec![0xE4, 0xB8, 0xAD]);
}

#[test]
fn decode_drops_specials_and_is_lossy_on_invalid_utf8() {
    let t = ByteTokenizer;
    let mut ids = vec![BOS];
    ids.extend(t.encode("ab"));
    ids.extend([EOS, PAD, 99_999]);
    assert_eq!(t.decode(&ids), "ab");
    // A lone continuation byte and a truncated 3-byte character.
    assert_eq!(t.decode(&[0x61, 0x80, 0x62]), "a\u{FFFD}b");
    assert_eq!(t.decode(&[0xE4, 0xB8]), "\u{FFFD}");
}

#[test]
fn usable_as_a_trait_object() {
    let boxed: Box<dyn Tokenizer> = Box::new(ByteTokenizer);
    assert_eq!(boxed.decode(&boxed.encode("dyn")), "dyn");
    assert_eq!(boxed.pad(), Some(PAD));
}
