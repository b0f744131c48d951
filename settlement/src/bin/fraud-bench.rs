//! The fraud rules' evaluation: seeded clean mixed-model traffic with one
//! labelled fraud pattern per rule injected (`settlement::fraud_sim`), run
//! through the engine with every rule at its default; prints precision,
//! recall and the false-positive rate on clean traffic, per pattern and
//! overall, and writes target/bench/fraud.json.
//!
//! `cargo run --release -p settlement --bin fraud-bench -- [--seed N] [--sessions N]`

use settlement::fraud_sim::{evaluate, generate, programs_toml, FraudGen};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

fn die(msg: &str) -> ! {
    eprintln!("fraud-bench: {msg}");
    std::process::exit(1)
}

fn main() {
    let mut g = FraudGen::default();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{k} needs a value")))
        };
        match k.as_str() {
            "--seed" => g.seed = v().parse().unwrap_or_else(|_| die("--seed N")),
            "--sessions" => g.sessions = v().parse().unwrap_or_else(|_| die("--sessions N")),
            "-h" | "--help" => {
                println!("fraud-bench [--seed N] [--sessions N]");
                return;
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    let t = Instant::now();
    let gen = generate(&g);
    let cfg = settlement::config::parse(Path::new("fraud-bench/programs.toml"), &programs_toml())
        .unwrap_or_else(|e| die(&e.to_string()));
    let t_gen = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let e = evaluate(&gen, &cfg, g.period).unwrap_or_else(|e| die(&e.to_string()));
    let t_eval = t.elapsed().as_secs_f64();

    println!(
        "fraud bench: seed {}, {} records, {} conversions scored ({} clean, {} injected: {:.1}%)",
        g.seed,
        gen.records.len(),
        e.conversions,
        e.clean,
        e.injected,
        100.0 * e.injected as f64 / e.conversions.max(1) as f64
    );
    println!(
        "  {:<24} {:>8} {:>8} {:>9} {:>9} {:>7} {:>9}",
        "pattern", "injected", "detected", "precision", "recall", "clean+", "clean FP"
    );
    for (name, s) in &e.patterns {
        println!(
            "  {:<24} {:>8} {:>8} {:>9.3} {:>9.3} {:>7} {:>8.3}%",
            name,
            s.injected,
            s.detected,
            s.precision,
            s.recall,
            s.clean_flagged,
            100.0 * s.clean_false_positive_rate
        );
    }
    println!(
        "  {:<24} {:>8} {:>8} {:>9.3} {:>9.3} {:>7} {:>8.3}%",
        "overall",
        e.injected,
        e.detected,
        e.precision,
        e.recall,
        e.clean_flagged,
        100.0 * e.clean_false_positive_rate
    );
    println!(
        "  clean conversions held or rejected: {} ({:.3}%)",
        e.clean_held_or_rejected,
        100.0 * e.clean_held_or_rejected as f64 / e.clean.max(1) as f64
    );
    println!("  generate {t_gen:.2} s, engine + scoring {t_eval:.2} s");
    let ok = e.precision >= 0.95 && e.recall >= 0.95 && e.clean_false_positive_rate <= 0.005;
    println!(
        "  targets (precision >= 0.95, recall >= 0.95, clean FP <= 0.5%): {}",
        if ok { "met" } else { "NOT met" }
    );

    let mut j = String::new();
    let _ = writeln!(j, "{{");
    let _ = writeln!(j, "  \"seed\": {},", g.seed);
    let _ = writeln!(j, "  \"conversions\": {},", e.conversions);
    let _ = writeln!(j, "  \"clean_conversions\": {},", e.clean);
    let _ = writeln!(j, "  \"injected\": {},", e.injected);
    let _ = writeln!(j, "  \"precision\": {:.4},", e.precision);
    let _ = writeln!(j, "  \"recall\": {:.4},", e.recall);
    let _ = writeln!(
        j,
        "  \"clean_false_positive_rate\": {:.5},",
        e.clean_false_positive_rate
    );
    let _ = writeln!(
        j,
        "  \"clean_held_or_rejected_rate\": {:.5},",
        e.clean_held_or_rejected as f64 / e.clean.max(1) as f64
    );
    let _ = writeln!(j, "  \"targets_met\": {ok},");
    let _ = writeln!(j, "  \"patterns\": {{");
    for (i, (name, s)) in e.patterns.iter().enumerate() {
        let _ = writeln!(
            j,
            "    \"{name}\": {{\"injected\": {}, \"detected\": {}, \"clean_flagged\": {}, \"precision\": {:.4}, \"recall\": {:.4}, \"clean_false_positive_rate\": {:.5}}}{}",
            s.injected,
            s.detected,
            s.clean_flagged,
            s.precision,
            s.recall,
            s.clean_false_positive_rate,
            if i + 1 < e.patterns.len() { "," } else { "" }
        );
    }
    let _ = writeln!(j, "  }}");
    let _ = writeln!(j, "}}");
    let dir = Path::new("target/bench");
    std::fs::create_dir_all(dir).unwrap_or_else(|e| die(&e.to_string()));
    let path = dir.join("fraud.json");
    std::fs::write(&path, j).unwrap_or_else(|e| die(&e.to_string()));
    println!("  written to {}", path.display());
}
