//! The `settlement` binary: a thin shell over the library.

use clap::{Parser, Subcommand};
use settlement::error::Error;
use settlement::period::Period;
use settlement::store::Store;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "settlement",
    version,
    about = "Attribution, commissions, ledger, statements and payouts for partner programs"
)]
struct Cli {
    /// The settlement store (SQLite).
    #[arg(long, global = true, default_value = "settlement.db")]
    db: PathBuf,
    /// No progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pull events, partners and coupons from the edge's export API (incremental, resumable).
    Pull {
        #[arg(long)]
        edge: String,
        #[arg(long, env = "SETTLEMENT_EXPORT_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Import NDJSON files of events, partner and coupon lines (idempotent).
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Set bad lines aside in a rejects file and import the rest.
        #[arg(long)]
        skip_invalid: bool,
        /// Where rejected lines go (default FILE.rejects.ndjson).
        #[arg(long)]
        rejects: Option<PathBuf>,
        /// The FILEs are CSV exports of another platform: partners, coupons
        /// and opening balances through this column mapping.
        #[arg(long, value_name = "MAPPING.toml")]
        map: Option<PathBuf>,
        /// With --map: write the mapping's [payout] details here, as
        /// [[payout.partners]] tables for programs.toml.
        #[arg(long, value_name = "OUT.toml", requires = "map")]
        payout_details: Option<PathBuf>,
    },
    /// Recompute a period's draft (a rerun changes nothing).
    Run {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        period: String,
    },
    /// Freeze a period: later facts become adjustments in the next open period.
    Close {
        #[arg(long)]
        period: String,
        /// The store's first close: settle from this period on and never
        /// book the facts of the months before it (history imported for
        /// attribution, settled elsewhere).
        #[arg(long)]
        first: bool,
    },
    /// Write statements.csv, payouts.csv, invoices.csv, ledger.csv and report.html.
    Report {
        #[arg(long)]
        period: String,
        #[arg(long)]
        out: PathBuf,
        /// programs.toml: its payout details add payouts.sepa.xml,
        /// payouts.paypal.<CUR>.csv and payouts.manual.csv.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Emit statement.ready and payout.created of a closed period through this edge.
        #[arg(long)]
        edge: Option<String>,
        /// The edge's ADMIN_TOKEN (needed with --edge).
        #[arg(long, env = "SETTLEMENT_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// The rule, the inputs and the arithmetic of one entry.
    Explain { entry_id: String },
    /// Operators' decisions on commissions the fraud rules hold.
    Review {
        #[command(subcommand)]
        cmd: ReviewCmd,
    },
    /// Erase one customer's personal data in the store, as the edge's
    /// DELETE /api/customers/{id} does: the same pseudonym, no amount changed.
    Erase {
        /// The customer id as the postbacks sent it.
        #[arg(long)]
        customer: String,
        /// The pseudonym the edge answered (`erased:...`); without it, it is
        /// computed from the secret in --secret-env.
        #[arg(long)]
        pseudonym: Option<String>,
        /// The environment variable holding the edge's erasure secret
        /// (its ERASURE_SECRET, else its CLICK_SECRET).
        #[arg(long, default_value = "ERASURE_SECRET")]
        secret_env: String,
        /// Who asks for the erasure (kept in the store's audit).
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Pull, run the open periods, close periods past their grace days, report.
    Nightly {
        #[arg(long)]
        config: PathBuf,
        /// Today's date (YYYY-MM-DD) instead of the clock.
        #[arg(long)]
        now: Option<String>,
    },
}

#[derive(Subcommand)]
enum ReviewCmd {
    /// Held entries awaiting a decision.
    List {
        /// Every held or fraud-rejected entry, with its decision.
        #[arg(long)]
        all: bool,
    },
    /// Release a held entry (or one a fraud rule rejected): payable from the next run.
    Release {
        entry_id: String,
        /// Who decides.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Reject a held entry: `rejected` (fraud:<rule>) at the next run, or
    /// reversed in the first open period when its period is closed.
    Reject {
        entry_id: String,
        /// Who decides.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

fn period(s: &str) -> Result<Period, Error> {
    Period::parse(s).ok_or_else(|| Error::Usage(format!("--period {s:?} is not YYYY-MM")))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let db = cli.db.clone();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<Error>() {
                // the store's errors name the store (a corrupt or truncated
                // file); our errors already include their cause, once
                Some(err @ Error::Store(_)) => {
                    eprintln!("settlement: error: {}: {err}", db.display())
                }
                Some(err) => eprintln!("settlement: error: {err}"),
                None => eprintln!("settlement: error: {e:#}"),
            }
            let code = e.downcast_ref::<Error>().map_or(2, Error::exit_code);
            ExitCode::from(code as u8)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let progress = !cli.quiet;
    // the commands that read or amend what a store holds never make one:
    // a mistyped --db would leave an empty store behind and answer from it
    if matches!(
        cli.cmd,
        Cmd::Explain { .. }
            | Cmd::Report { .. }
            | Cmd::Review { .. }
            | Cmd::Close { .. }
            | Cmd::Erase { .. }
    ) && !cli.db.exists()
    {
        return Err(Error::Usage(format!(
            "no settlement store at {} (import, pull or nightly makes one; check --db)",
            cli.db.display()
        ))
        .into());
    }
    let mut store = Store::open(&cli.db)?;
    match cli.cmd {
        Cmd::Pull { edge, token } => {
            let mut o = settlement::pull::PullOptions::new(&edge, &token);
            o.progress = progress;
            let r = settlement::pull::pull(&mut store, &o)?;
            eprintln!(
                "pulled {} pages: {} new events, {} already known, {} registry lines; cursor {}",
                r.pages, r.counts.new, r.counts.duplicate, r.counts.registry, r.cursor
            );
        }
        Cmd::Import {
            files,
            skip_invalid,
            rejects,
            map: Some(map),
            payout_details,
        } => {
            if payout_details.is_some() && files.len() > 1 {
                // each file's details would replace the last one's
                return Err(Error::Usage(
                    "--payout-details takes one CSV file: import the files one at a time, \
                     each with its own details file"
                        .into(),
                )
                .into());
            }
            let m = settlement::migrate::load(&map)?;
            let o = settlement::migrate::CsvOptions {
                skip_invalid,
                rejects,
                payout_details,
            };
            for f in &files {
                let r = settlement::migrate::import_csv(&mut store, &m, f, &o)?;
                for l in r.lines(f) {
                    eprintln!("{l}");
                }
            }
        }
        Cmd::Import {
            files,
            skip_invalid,
            rejects,
            map: None,
            ..
        } => {
            let o = settlement::import::ImportOptions {
                skip_invalid,
                rejects,
                progress,
            };
            for f in &files {
                let r = settlement::import::import_file(&mut store, f, &o)?;
                eprintln!(
                    "{}: {} new events, {} already known, {} registry lines{}",
                    f.display(),
                    r.counts.new,
                    r.counts.duplicate,
                    r.counts.registry,
                    match &r.rejects_path {
                        Some(p) =>
                            format!(", {} bad lines set aside in {}", r.rejected, p.display()),
                        None => String::new(),
                    }
                );
            }
        }
        Cmd::Run { config, period: p } => {
            let p = period(&p)?;
            let cfg = settlement::config::load(&config)?;
            if let Some(q) = settlement::run::never_run_before(&store, p)? {
                let first = if store.last_closed()?.is_none() {
                    " (or close it with --first to settle from it on, leaving the months before it unsettled)"
                } else {
                    ""
                };
                eprintln!(
                    "warning: {q} has never been run: this draft of {p} carries in no balance from it and cannot be closed before it is{first}; run the periods in order"
                );
            }
            let outcome = settlement::run::run(&mut store, &cfg, p)?;
            let unknown = settlement::run::stat(&store, p, "unknown_program")?;
            if !unknown.is_empty() {
                let names: Vec<String> =
                    unknown.iter().map(|(g, n)| format!("{g} ({n})")).collect();
                eprintln!(
                    "warning: conversions of {p} name programs {} does not define: {}; they are booked nowhere, and stay so once {p} is closed: add the programs and run {p} again",
                    config.display(),
                    names.join(", ")
                );
            }
            let dups = settlement::run::duplicates(&store, p)?;
            if dups > 0 {
                eprintln!(
                    "warning: {dups} conversions of {p} repeat the program, event and txn_id of an earlier one (the same sale brought in under two event ids): counted once, the first in time stands; report.html counts them per program"
                );
            }
            match outcome {
                settlement::run::RunOutcome::Replaced {
                    entries,
                    statements,
                } => {
                    eprintln!(
                        "{p}: draft written: {entries} ledger entries, {statements} statements"
                    )
                }
                settlement::run::RunOutcome::Unchanged {
                    entries,
                    statements,
                } => {
                    eprintln!(
                        "{p}: draft unchanged: {entries} ledger entries, {statements} statements"
                    )
                }
            }
        }
        Cmd::Close { period: p, first } => {
            let p = period(&p)?;
            settlement::run::close_with(&mut store, p, first)?;
            eprintln!("{p}: closed");
        }
        Cmd::Report {
            period: p,
            out,
            config,
            edge,
            admin_token,
        } => {
            let p = period(&p)?;
            let cfg = config.map(|c| settlement::config::load(&c)).transpose()?;
            let emit =
                settlement::emit::EmitOptions::from_flags(edge.as_deref(), admin_token.as_deref())?;
            let d = settlement::report::report(&store, p, &out)?;
            eprintln!(
                "{p}: {} statements, {} payouts, {} invoice lines, {} ledger entries written to {}",
                d.statements.len(),
                d.payouts.len(),
                d.invoices.len(),
                d.ledger_count,
                out.display()
            );
            if let Some(cfg) = cfg {
                let s = settlement::payout_files::write_for(
                    &store,
                    &out,
                    p,
                    &d.payouts,
                    &cfg.payout_details,
                )?;
                for l in s {
                    eprintln!("{p}: {l}");
                }
            } else {
                for n in settlement::payout_files::remove_all(&out)? {
                    eprintln!(
                        "{p}: removed {n} of an earlier report (no --config: no payout files, and payouts.csv has changed)"
                    );
                }
            }
            if let Some(o) = emit {
                eprintln!("{}", settlement::emit::emit(&store, p, &d, &o)?.describe(p));
            }
        }
        Cmd::Explain { entry_id } => {
            print!("{}", settlement::explain::explain(&store, &entry_id)?);
        }
        Cmd::Review { cmd } => match cmd {
            ReviewCmd::List { all } => print!("{}", settlement::fraud::list(&store, all)?),
            ReviewCmd::Release {
                entry_id,
                by,
                reason,
            } => eprintln!(
                "{}",
                settlement::fraud::decide_entry(&mut store, &entry_id, true, &by, &reason)?
            ),
            ReviewCmd::Reject {
                entry_id,
                by,
                reason,
            } => eprintln!(
                "{}",
                settlement::fraud::decide_entry(&mut store, &entry_id, false, &by, &reason)?
            ),
        },
        Cmd::Erase {
            customer,
            pseudonym,
            secret_env,
            by,
        } => {
            let secret = std::env::var(&secret_env).ok();
            let p =
                settlement::erase::pseudonym(&customer, pseudonym.as_deref(), secret.as_deref())?;
            let at = edge::time::Timestamp(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64),
            )
            .to_string();
            let e = settlement::erase::erase(&mut store, &customer, &p, &by, &at)?;
            if e.already {
                eprintln!("{}: erased before; nothing left to change", e.pseudonym);
            } else {
                eprintln!(
                    "erased: {} conversions and deals now carry {}, {} clicks scrubbed",
                    e.events, e.pseudonym, e.clicks
                );
            }
        }
        Cmd::Nightly { config, now } => {
            let today = settlement::nightly::today(now.as_deref())?;
            let r = settlement::nightly::nightly(&mut store, &config, today, progress)?;
            for (p, changed) in &r.ran {
                eprintln!(
                    "{p}: {}{}",
                    if *changed {
                        "draft written"
                    } else {
                        "draft unchanged"
                    },
                    if r.closed.contains(p) { ", closed" } else { "" }
                );
            }
            for line in &r.emitted {
                eprintln!("{line}");
            }
        }
    }
    Ok(())
}
