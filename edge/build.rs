//! Compiles the maintained crawler list (`data/crawler-user-agents.json`, from
//! the crawler-user-agents project) into static tables: plain literals go to an
//! Aho-Corasick automaton, the few real regular expressions to one regex.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let src = Path::new("data/crawler-user-agents.json");
    println!("cargo:rerun-if-changed={}", src.display());
    let text = std::fs::read_to_string(src).expect("read crawler list");
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("parse crawler list");
    let mut literals = String::new();
    let mut regexes = String::new();
    for entry in &list {
        let pattern = entry["pattern"].as_str().expect("pattern");
        let preview = entry["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "social-preview"));
        let class = u8::from(preview);
        let hir = regex_syntax::parse(pattern).expect("valid pattern");
        match hir.kind() {
            regex_syntax::hir::HirKind::Literal(lit) => {
                let s = std::str::from_utf8(&lit.0).expect("utf-8 literal");
                writeln!(literals, "    ({s:?}, {class}),").unwrap();
            }
            _ => {
                writeln!(regexes, "    ({pattern:?}, {class}),").unwrap();
            }
        }
    }
    let out = format!(
        "/// Literal crawler patterns and their class (1 = link preview).\n\
         pub static LITERALS: &[(&str, u8)] = &[\n{literals}];\n\
         /// Crawler patterns that need a regex, and their class.\n\
         pub static REGEXES: &[(&str, u8)] = &[\n{regexes}];\n"
    );
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("bot_patterns.rs");
    std::fs::write(dest, out).unwrap();
}
