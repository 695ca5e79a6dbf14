//! One file per `switchyard` command: its clap `Args` and a `run` that does the command.
//! `main.rs` parses the command line and calls the `run` of the command named.
//!
//! A new command is a new file here, one `pub mod` line below and one variant in `main.rs`'s
//! `Command` enum.

// The `Args` doc comments are the terminal help text, where `<domain>` and `<ckpt>` are
// placeholders, not HTML.
#![allow(rustdoc::invalid_html_tags)]

pub mod analyze;
pub mod bench;
pub mod compare_routers;
pub mod demo;
pub mod eval;
pub mod experts;
pub mod export;
pub mod generate;
pub mod import;
pub mod logits;
pub mod train;
pub mod upcycle;
