//! Every flag's help says what it changes and, for a flag that takes a value, its default
//! (clap's `[default: …]`, or the help text naming it): `train --steps` used to say only
//! "(train.steps)", and `generate --prompt`, `--seed` and `--max-tokens` had no help at all.

use clap::{Args, Command};
use switchyard_cli::commands::{
    analyze::AnalyzeArgs, bench::BenchArgs, compare_routers::CompareRoutersArgs, demo::DemoArgs,
    eval::EvalArgs, export::ExportArgs, generate::GenerateArgs, import::ImportArgs,
    logits::LogitsArgs, train::TrainArgs,
};

/// Words a help text needs at least, beyond naming the flag.
const MIN_HELP_WORDS: usize = 5;

fn commands() -> Vec<Command> {
    vec![
        TrainArgs::augment_args(Command::new("train")),
        GenerateArgs::augment_args(Command::new("generate")),
        EvalArgs::augment_args(Command::new("eval")),
        DemoArgs::augment_args(Command::new("demo")),
        CompareRoutersArgs::augment_args(Command::new("compare-routers")),
        BenchArgs::augment_args(Command::new("bench")),
        AnalyzeArgs::augment_args(Command::new("analyze")),
        ImportArgs::augment_args(Command::new("import")),
        ExportArgs::augment_args(Command::new("export")),
        LogitsArgs::augment_args(Command::new("logits")),
    ]
}

#[test]
fn every_flag_says_what_it_changes_and_its_default() {
    let mut problems = Vec::new();
    for cmd in commands() {
        for arg in cmd.get_arguments() {
            let name = format!("{} --{}", cmd.get_name(), arg.get_id());
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let long = arg
                .get_long_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            let text = format!("{help} {long}");
            if text.split_whitespace().count() < MIN_HELP_WORDS {
                problems.push(format!("{name}: help too short: {text:?}"));
                continue;
            }
            let takes_value = arg.get_action().takes_values();
            let optional = !arg.is_required_set() && !arg.is_positional();
            let has_default = !arg.get_default_values().is_empty()
                && !arg.is_hide_default_value_set()
                || text.to_lowercase().contains("default");
            if takes_value && optional && !has_default {
                problems.push(format!("{name}: no default named: {text:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
