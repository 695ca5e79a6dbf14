//! Rust- and C-like source: functions with nested `if`/`for` blocks, 4-space indentation and
//! balanced braces. Variables are only used after they are declared and only declared ones are
//! assigned, so scope is learnable; each document sticks to one of the two surface syntaxes.

use std::fmt::Write;

use rand::Rng;

use super::{chance, pick};

const IDENTS: &[&str] = &[
    "count", "total", "index", "value", "offset", "size", "left", "right", "sum", "acc", "limit",
    "step", "width", "height", "depth", "score", "delta", "head", "tail", "len",
];
const LOOP_VARS: &[&str] = &["i", "j", "k"];
const FN_VERBS: &[&str] = &[
    "compute", "parse", "update", "find", "check", "merge", "scale", "count", "reduce", "clamp",
    "fold", "apply", "encode", "decode",
];
const FN_NOUNS: &[&str] = &[
    "total", "header", "buffer", "index", "range", "score", "weights", "tokens", "block", "entry",
    "window", "offset",
];
const ARITH_OPS: &[&str] = &["+", "-", "*", "/", "%"];
const COMPARISONS: &[&str] = &["<", ">", "<=", ">=", "==", "!="];
const INDENT: &str = "    ";
/// Deeper nesting makes functions long and rare constructs rarer; three levels is plenty.
const MAX_DEPTH: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum Lang {
    Rust,
    C,
}

#[derive(Clone, Copy)]
struct Var {
    name: &'static str,
    mutable: bool,
}

pub(super) fn document(rng: &mut impl Rng, target_bytes: usize) -> String {
    let lang = if chance(rng, 50) { Lang::Rust } else { Lang::C };
    let mut out = String::with_capacity(target_bytes + 512);
    while out.len() < target_bytes {
        function(rng, lang, &mut out);
        out.push('\n');
    }
    out
}

fn function(rng: &mut impl Rng, lang: Lang, out: &mut String) {
    let name = format!("{}_{}", pick(rng, FN_VERBS), pick(rng, FN_NOUNS));
    let mut scope: Vec<Var> = Vec::new();
    for _ in 0..rng.random_range(1..4) {
        if let Some(name) = fresh(rng, &scope, IDENTS) {
            scope.push(Var {
                name,
                mutable: false,
            });
        }
    }
    let params: Vec<String> = scope
        .iter()
        .map(|v| match lang {
            Lang::Rust => format!("{}: i64", v.name),
            Lang::C => format!("long {}", v.name),
        })
        .collect();
    let params = params.join(", ");
    if chance(rng, 30) {
        out.push_str(match lang {
            Lang::Rust => "/// Returns the combined value.\n",
            Lang::C => "/* Returns the combined value. */\n",
        });
    }
    let _ = match lang {
        Lang::Rust => writeln!(out, "fn {name}({params}) -> i64 {{"),
        Lang::C => writeln!(out, "long {name}({params}) {{"),
    };
    for _ in 0..rng.random_range(2..6) {
        statement(rng, lang, 1, &mut scope, out);
    }
    let result = expr(rng, &scope);
    let _ = match lang {
        Lang::Rust => writeln!(out, "{INDENT}{result}"),
        Lang::C => writeln!(out, "{INDENT}return {result};"),
    };
    out.push_str("}\n");
}

fn statement(rng: &mut impl Rng, lang: Lang, depth: usize, scope: &mut Vec<Var>, out: &mut String) {
    let pad = INDENT.repeat(depth);
    let roll = rng.random_range(0..100);
    if depth < MAX_DEPTH && roll < 30 {
        let cond = condition(rng, scope);
        let _ = match lang {
            Lang::Rust => writeln!(out, "{pad}if {cond} {{"),
            Lang::C => writeln!(out, "{pad}if ({cond}) {{"),
        };
        block(rng, lang, depth + 1, scope.clone(), out);
        if chance(rng, 40) {
            let _ = writeln!(out, "{pad}}} else {{");
            block(rng, lang, depth + 1, scope.clone(), out);
        }
        let _ = writeln!(out, "{pad}}}");
    } else if depth < MAX_DEPTH && roll < 50 {
        let Some(var) = fresh(rng, scope, LOOP_VARS) else {
            return;
        };
        let bound = term(rng, scope);
        let _ = match lang {
            Lang::Rust => writeln!(out, "{pad}for {var} in 0..{bound} {{"),
            Lang::C => writeln!(
                out,
                "{pad}for (long {var} = 0; {var} < {bound}; {var}++) {{"
            ),
        };
        let mut inner = scope.clone();
        inner.push(Var {
            name: var,
            mutable: false,
        });
        block(rng, lang, depth + 1, inner, out);
        let _ = writeln!(out, "{pad}}}");
    } else if roll < 55 {
        let _ = writeln!(
            out,
            "{pad}// {} the {}",
            pick(rng, FN_VERBS),
            pick(rng, FN_NOUNS)
        );
    } else if let (true, Some(target)) = (roll < 75, assignable(rng, scope)) {
        let op = pick(rng, &["=", "+=", "-=", "*="]);
        let _ = writeln!(out, "{pad}{target} {op} {};", expr(rng, scope));
    } else if let Some(name) = fresh(rng, scope, IDENTS) {
        let value = expr(rng, scope);
        let _ = match lang {
            Lang::Rust => writeln!(out, "{pad}let mut {name} = {value};"),
            Lang::C => writeln!(out, "{pad}long {name} = {value};"),
        };
        scope.push(Var {
            name,
            mutable: true,
        });
    }
}

/// Variables declared inside a block go out of scope with it, hence the owned copy.
fn block(rng: &mut impl Rng, lang: Lang, depth: usize, mut scope: Vec<Var>, out: &mut String) {
    for _ in 0..rng.random_range(1..4) {
        statement(rng, lang, depth, &mut scope, out);
    }
}

fn fresh(rng: &mut impl Rng, scope: &[Var], pool: &[&'static str]) -> Option<&'static str> {
    let free: Vec<&'static str> = pool
        .iter()
        .copied()
        .filter(|n| scope.iter().all(|v| v.name != *n))
        .collect();
    (!free.is_empty()).then(|| pick(rng, &free))
}

fn assignable(rng: &mut impl Rng, scope: &[Var]) -> Option<&'static str> {
    let vars: Vec<&'static str> = scope.iter().filter(|v| v.mutable).map(|v| v.name).collect();
    (!vars.is_empty()).then(|| pick(rng, &vars))
}

fn term(rng: &mut impl Rng, scope: &[Var]) -> String {
    if scope.is_empty() || chance(rng, 30) {
        rng.random_range(0..17u32).to_string()
    } else {
        pick(rng, scope).name.to_string()
    }
}

fn expr(rng: &mut impl Rng, scope: &[Var]) -> String {
    match rng.random_range(0..10) {
        0..=3 => term(rng, scope),
        4..=8 => format!(
            "{} {} {}",
            term(rng, scope),
            pick(rng, ARITH_OPS),
            term(rng, scope)
        ),
        _ => format!(
            "({} + {}) * {}",
            term(rng, scope),
            term(rng, scope),
            term(rng, scope)
        ),
    }
}

/// The left side is a variable whenever one is in scope: comparing two literals teaches nothing.
fn condition(rng: &mut impl Rng, scope: &[Var]) -> String {
    let left = match scope.is_empty() {
        true => term(rng, scope),
        false => pick(rng, scope).name.to_string(),
    };
    format!("{left} {} {}", pick(rng, COMPARISONS), term(rng, scope))
}
