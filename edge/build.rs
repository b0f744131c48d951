//! Compiles the maintained crawler list (`data/crawler-user-agents.json`, from
//! the crawler-user-agents project) into static tables. Plain literals go to
//! an Aho-Corasick automaton. Each real regular expression gets the set of
//! literals one of which every match must start with (its prefilter), found
//! with regex-syntax; the worker runs an expression only when the automaton
//! saw one of them, so a person's user agent costs one automaton pass.

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use std::fmt::Write;
use std::path::Path;

fn main() {
    let src = Path::new("data/crawler-user-agents.json");
    println!("cargo:rerun-if-changed={}", src.display());
    let text = std::fs::read_to_string(src).expect("read crawler list");
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("parse crawler list");
    let mut literals = String::new();
    let mut regexes = String::new();
    let mut prefilters = String::new();
    let mut regex_index = 0usize;
    for entry in &list {
        let pattern = entry["pattern"].as_str().expect("pattern");
        let preview = entry["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "social-preview"));
        let class = u8::from(preview);
        let hir = regex_syntax::parse(pattern).expect("valid pattern");
        if let regex_syntax::hir::HirKind::Literal(lit) = hir.kind() {
            let s = std::str::from_utf8(&lit.0).expect("utf-8 literal");
            writeln!(literals, "    ({s:?}, {class}),").unwrap();
            continue;
        }
        let mut ex = Extractor::new();
        ex.kind(ExtractKind::Prefix).limit_total(64);
        let seq = ex.extract(&hir);
        let lits: Option<Vec<String>> = seq.literals().and_then(|ls| {
            ls.iter()
                .map(|l| std::str::from_utf8(l.as_bytes()).ok().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .filter(|v| !v.is_empty() && v.iter().all(|s| s.len() >= 2))
        });
        match lits {
            Some(ls) => {
                for l in ls {
                    writeln!(prefilters, "    ({l:?}, {regex_index}),").unwrap();
                }
            }
            // No usable prefix: always run this expression.
            None => writeln!(prefilters, "    (\"\", {regex_index}),").unwrap(),
        }
        writeln!(regexes, "    ({pattern:?}, {class}),").unwrap();
        regex_index += 1;
    }
    let out = format!(
        "/// Literal crawler patterns and their class (1 = link preview).\n\
         pub static LITERALS: &[(&str, u8)] = &[\n{literals}];\n\
         /// Crawler patterns that need a regex, and their class.\n\
         pub static REGEXES: &[(&str, u8)] = &[\n{regexes}];\n\
         /// (literal, index into REGEXES): a match of that regex starts with one\n\
         /// of its literals; an empty literal means always run it.\n\
         pub static PREFILTERS: &[(&str, usize)] = &[\n{prefilters}];\n"
    );
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("bot_patterns.rs");
    std::fs::write(dest, out).unwrap();
}
