//! Loading users' text: one file, or `<dir>/<domain>/*.txt`, and the errors a user can fix.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_data::{
    chunk_text, load_domain_dir, load_text_file, ByteTokenizer, DataError, Dataset, DatasetConfig,
    DOC_CHUNK_BYTES,
};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "switchyard-data-{tag}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn domain_dir_loads_in_sorted_order_and_skips_other_files() {
    let t = TempDir::new("sorted");
    t.write("poems/b.txt", "second file\n");
    t.write("poems/a.txt", "first file\n");
    t.write("poems/notes.md", "not text data");
    t.write("poems/.hidden.txt", "editor junk");
    t.write("code/main.TXT", "fn main() {}\n");
    t.write("README.txt", "top-level files are not a domain");
    fs::create_dir_all(t.path().join(".git/objects")).unwrap();

    let docs = load_domain_dir(t.path()).unwrap();
    let got: Vec<(&str, &str)> = docs
        .iter()
        .map(|d| (d.domain.as_str(), d.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("code", "fn main() {}\n"),
            ("poems", "first file\n"),
            ("poems", "second file\n")
        ]
    );
}

#[test]
fn invalid_utf8_is_read_lossily() {
    let t = TempDir::new("lossy");
    let path = t.write("latin1.txt", b"caf\xe9 au lait\n");
    let docs = load_text_file(&path).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].domain, "latin1");
    assert_eq!(docs[0].text, "caf\u{FFFD} au lait\n");
}

#[test]
fn long_files_become_several_documents_cut_at_line_breaks() {
    let t = TempDir::new("chunks");
    let line = "the quick brown fox jumps over the lazy dog\n";
    let text = line.repeat(3 * DOC_CHUNK_BYTES / line.len());
    let path = t.write("fox.txt", &text);
    let docs = load_text_file(&path).unwrap();
    assert!(docs.len() >= 3, "{} documents", docs.len());
    assert!(docs
        .iter()
        .all(|d| d.text.len() <= DOC_CHUNK_BYTES && d.text.ends_with('\n')));
    assert_eq!(
        docs.iter().map(|d| d.text.as_str()).collect::<String>(),
        text
    );

    // A single file is enough for a train/validation split.
    let data = Dataset::build(
        &docs,
        &ByteTokenizer,
        &DatasetConfig {
            seq_len: 64,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(data.domains.names(), ["fox"]);
}

#[test]
fn chunking_never_splits_a_character_and_always_progresses() {
    let text = "日本語のテキスト".repeat(10);
    for max in [0, 1, 2, 3, 4, 7, 100] {
        let chunks = chunk_text(&text, max);
        assert_eq!(chunks.concat(), text, "max {max}");
        assert!(chunks.iter().all(|c| c.len() <= max.max(3)), "max {max}");
    }
    assert_eq!(chunk_text("  \n\n \t", 2), Vec::<&str>::new());
}

#[test]
fn missing_dir_error_names_the_path_and_the_expected_layout() {
    let t = TempDir::new("missing");
    let missing = t.path().join("nope");
    let err = load_domain_dir(&missing).unwrap_err();
    assert!(matches!(err, DataError::MissingDir { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&missing.display().to_string()) && msg.contains("/prose/part1.txt"),
        "{msg}"
    );
}

#[test]
fn a_file_where_a_dir_is_expected_is_an_error() {
    let t = TempDir::new("notdir");
    let file = t.write("data.txt", "hello\n");
    let err = load_domain_dir(&file).unwrap_err();
    assert!(matches!(err, DataError::NotADirectory { .. }), "{err}");
    assert!(err.to_string().contains("load_text_file"), "{err}");
}

#[test]
fn dir_without_domain_subdirs_is_an_error() {
    let t = TempDir::new("nodomains");
    t.write("loose.txt", "text directly in the root\n");
    let err = load_domain_dir(t.path()).unwrap_err();
    assert!(matches!(err, DataError::NoDomains { .. }), "{err}");
    assert!(err.to_string().contains("<dir>/<domain>/*.txt"), "{err}");
}

#[test]
fn domain_without_txt_files_is_an_error_naming_it() {
    let t = TempDir::new("notxt");
    t.write("good/a.txt", "fine\n");
    t.write("bad/a.md", "markdown only\n");
    let err = load_domain_dir(t.path()).unwrap_err();
    let DataError::NoTextFiles { path } = &err else {
        panic!("{err}")
    };
    assert!(path.ends_with("bad"));
    assert!(
        err.to_string().contains("add at least one .txt file"),
        "{err}"
    );
}

#[test]
fn empty_and_whitespace_files_are_errors_naming_the_file() {
    let t = TempDir::new("empty");
    t.write("prose/a.txt", "some text\n");
    let empty = t.write("prose/b.txt", " \n\t\n");
    let err = load_domain_dir(t.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::EmptyFile { path } if *path == empty),
        "{err}"
    );
    assert!(err.to_string().contains("b.txt is empty"), "{err}");
    assert!(matches!(
        load_text_file(t.write("zero.txt", "")),
        Err(DataError::EmptyFile { .. })
    ));
}

#[test]
fn unreadable_file_is_an_io_error_with_the_os_reason_as_source() {
    let t = TempDir::new("io");
    let missing = t.path().join("ghost.txt");
    let err = load_text_file(&missing).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert!(err.to_string().contains("ghost.txt"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}
