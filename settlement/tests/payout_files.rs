//! Payout files from `settlement report --config`: payouts.sepa.xml is valid
//! pain.001.001.09 (checked with xmllint against the official XSD that
//! `settlement/tests/setup-sepa.sh` installs), its control sum and amounts
//! equal payouts.csv, it is byte-identical on a rerun; PayPal and manual
//! files carry the rest.

mod common;
use common::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

fn xsd() -> PathBuf {
    if let Some(p) = std::env::var_os("SEPA_XSD") {
        return PathBuf::from(p);
    }
    repo().join("target/sepa-xsd/sepaxml/schemas/pain.001.001.09.xsd")
}

fn settle(db: &Path, out: &Path) -> String {
    settle_with(db, out, &repo().join("examples/payouts/programs.toml"))
}

fn settle_with(db: &Path, out: &Path, cfg: &Path) -> String {
    let ex = repo().join("examples/payouts");
    ok(db, &["import", ex.join("events.ndjson").to_str().unwrap()]);
    ok(
        db,
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--period",
            "2026-11",
        ],
    );
    // payout files are written for a closed period only
    ok(db, &["close", "--period", "2026-11"]);
    let o = settlement(
        db,
        &[
            "report",
            "--period",
            "2026-11",
            "--out",
            out.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The text of every `<tag>` in document order.
fn all(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut v = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        if !after.starts_with(['>', ' ']) {
            rest = after;
            continue;
        }
        let gt = after.find('>').unwrap();
        let body = &after[gt + 1..];
        let end = body.find(&close).unwrap();
        v.push(body[..end].trim().to_string());
        rest = &body[end..];
    }
    v
}

fn payouts_csv(out: &Path) -> Vec<Vec<String>> {
    read(&out.join("payouts.csv"))
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn sepa_xml_is_valid_pain_001_001_09_and_matches_payouts_csv() {
    let xsd = xsd();
    assert!(
        xsd.is_file(),
        "{} is missing: run settlement/tests/setup-sepa.sh (make test does)",
        xsd.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let summary = settle(&dir.path().join("s.db"), &out);
    let xml_path = out.join("payouts.sepa.xml");
    let v = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&xsd)
        .arg(&xml_path)
        .output()
        .expect("xmllint (settlement/tests/setup-sepa.sh installs it)");
    assert!(
        v.status.success(),
        "xmllint refused payouts.sepa.xml:\n{}\n{}",
        String::from_utf8_lossy(&v.stderr),
        read(&xml_path)
    );
    let xml = read(&xml_path);

    // the EUR payouts of partners with bank details, as in payouts.csv
    let rows = payouts_csv(&out);
    let eur_bank = ["aff_anna", "aff_bram", "aff_chloe"];
    let want: BTreeMap<String, String> = rows
        .iter()
        .filter(|r| r[2] == "EUR" && eur_bank.contains(&r[1].as_str()))
        .map(|r| (r[4].clone(), r[3].clone()))
        .collect();
    assert_eq!(want.len(), 3, "{rows:?}");
    // EndToEndId: the reference in SEPA characters (`_` as `-`)
    let ids = all(&xml, "EndToEndId");
    let amounts = all(&xml, "InstdAmt");
    let got: BTreeMap<String, String> = ids.into_iter().zip(amounts).collect();
    let want_e2e: BTreeMap<String, String> = want
        .iter()
        .map(|(k, v)| (k.replace('_', "-"), v.clone()))
        .collect();
    assert_eq!(got, want_e2e);
    // hand-computed: anna 123.45 + 30.00 (30.005 half-even), bram 100.00
    // (99.999), chloe 250.00 + 12.00
    assert_eq!(want["PO-2026-11-aff_anna"], "153.45");
    assert_eq!(want["PO-2026-11-aff_bram"], "100.00");
    assert_eq!(want["PO-2026-11-aff_chloe"], "262.00");

    let sum: Decimal = want.values().map(|a| Decimal::from_str(a).unwrap()).sum();
    assert_eq!(sum.to_string(), "515.45");
    assert_eq!(all(&xml, "CtrlSum"), vec!["515.45", "515.45"]);
    assert_eq!(all(&xml, "NbOfTxs"), vec!["3", "3"]);
    // the EUR total of payouts.csv = the control sum + EUR paid elsewhere
    let eur_total: Decimal = rows
        .iter()
        .filter(|r| r[2] == "EUR")
        .map(|r| Decimal::from_str(&r[3]).unwrap())
        .sum();
    let eur_elsewhere: Decimal = rows
        .iter()
        .filter(|r| r[2] == "EUR" && !eur_bank.contains(&r[1].as_str()))
        .map(|r| Decimal::from_str(&r[3]).unwrap())
        .sum();
    assert_eq!(eur_total, sum + eur_elsewhere);
    assert_eq!(eur_elsewhere.to_string(), "185.00"); // dora 45.00 + gus 80.00 + emre 60.00

    // names and accounts from programs.toml, escaped
    // names in the SEPA character set
    assert!(xml.contains("<Nm>Bram + Zonen B.V.</Nm>"), "{xml}");
    assert!(xml.contains("<Nm>Chloe Martin</Nm>"), "{xml}");
    assert!(
        xml.contains("<Ustrd>Partner payout 2026-11 PO-2026-11-aff-anna</Ustrd>"),
        "{xml}"
    );
    assert!(xml.contains("<IBAN>NL91ABNA0417164300</IBAN>"));
    assert!(xml.contains("<IBAN>DE89370400440532013000</IBAN>")); // debtor
    assert!(
        xml.contains(
            "<Dbtr>\n        <Nm>Example Partners GmbH</Nm>\n        <PstlAdr>\n          \
             <StrtNm>Friedrichstrasse</StrtNm>\n          <BldgNb>123</BldgNb>\n          \
             <PstCd>10117</PstCd>\n          <TwnNm>Berlin</TwnNm>\n          <Ctry>DE</Ctry>\n        \
             </PstlAdr>\n      </Dbtr>"
        ),
        "{xml}"
    );
    assert!(xml.contains("<CreDtTm>2026-11-30T23:59:59</CreDtTm>"));
    assert!(xml.contains("<Dt>2026-12-01</Dt>"));

    // PayPal: one file per currency, no header, PayPal's column order
    assert_eq!(
        read(&out.join("payouts.paypal.EUR.csv")),
        "dora@example.net,45.00,EUR,aff_dora,Partner payout 2026-11 (PO-2026-11-aff_dora),PAYPAL\n"
    );
    assert_eq!(
        read(&out.join("payouts.paypal.USD.csv")),
        "eli@example.com,70.00,USD,us_eli,Partner payout 2026-11 (PO-2026-11-us_eli),PAYPAL\n"
    );
    // the rest, with the reason, and said in the summary
    let manual = read(&out.join("payouts.manual.csv"));
    assert_eq!(
        manual,
        "period,partner,currency,amount,reference,reason\n\
         2026-11,aff_emre,EUR,60.00,PO-2026-11-aff_emre,the IBAN's country TR is outside the SEPA scheme\n\
         2026-11,aff_gus,EUR,80.00,PO-2026-11-aff_gus,no payout details in [[payout.partners]]\n\
         2026-11,us_fay,USD,150.00,PO-2026-11-us_fay,\"SEPA transfers are in EUR, the payout is in USD and there is no paypal_email\"\n"
    );
    assert!(
        summary.contains("payouts.sepa.xml: 3 SEPA transfers, 515.45 EUR"),
        "{summary}"
    );
    assert!(
        summary.contains("not in a payout file (payouts.manual.csv): us_fay 150.00 USD"),
        "{summary}"
    );
    // every payout is in exactly one file
    assert_eq!(rows.len(), 3 + 2 + 3);

    // deterministic: a second store and report give the same bytes
    let dir2 = tempfile::tempdir().unwrap();
    let out2 = dir2.path().join("out");
    settle(&dir2.path().join("s.db"), &out2);
    assert_eq!(xml, read(&out2.join("payouts.sepa.xml")));
    let msg = all(&xml, "MsgId");
    assert_eq!(msg.len(), 1);
    assert!(
        msg[0].starts_with("PT-2026-11-") && msg[0].len() <= 35,
        "{msg:?}"
    );
}

#[test]
fn report_without_config_writes_no_payout_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let ex = repo().join("examples/payouts");
    ok(&db, &["import", ex.join("events.ndjson").to_str().unwrap()]);
    ok(
        &db,
        &[
            "run",
            "--config",
            ex.join("programs.toml").to_str().unwrap(),
            "--period",
            "2026-11",
        ],
    );
    ok(&db, &["close", "--period", "2026-11"]);
    let out = dir.path().join("out");
    report(&db, "2026-11", &out, &[]);
    assert!(out.join("payouts.csv").is_file());
    assert!(!out.join("payouts.sepa.xml").exists());
    assert!(!out.join("payouts.manual.csv").exists());
    // an earlier report with --config left payout files: a report without
    // it removes them (they would pay that report's amounts)
    let cfg = ex.join("programs.toml");
    report(&db, "2026-11", &out, &["--config", cfg.to_str().unwrap()]);
    assert!(out.join("payouts.sepa.xml").is_file() && out.join("payouts.manual.csv").is_file());
    let paypal = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("payouts.paypal.")
        })
        .count();
    assert!(paypal > 0);
    report(&db, "2026-11", &out, &[]);
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("payouts.") && n != "payouts.csv")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_payout_details_are_config_errors_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let head = "currency = \"EUR\"\n[payout]\nminimum = \"0\"\n";
    let prog = "[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n";
    for (body, line, key, what) in [
        (
            "[[payout.partners]]\nid = \"a\"\nlegal_name = \"A\"\niban = \"DE89370400440532013001\"\nbic = \"COBADEFFXXX\"\n",
            7,
            "iban",
            "check digits",
        ),
        (
            "[[payout.partners]]\nid = \"a\"\nlegal_name = \"A\"\niban = \"DE8937040044053201300\"\nbic = \"COBADEFFXXX\"\n",
            7,
            "iban",
            "an IBAN of DE has 22",
        ),
        (
            "[[payout.partners]]\nid = \"a\"\nlegal_name = \"A\"\niban = \"DE89370400440532013000\"\nbic = \"COBADEF\"\n",
            8,
            "bic",
            "not a BIC",
        ),
        (
            "[payout.sepa]\nname = \"Op\"\niban = \"GB82WEST12345698765423\"\nbic = \"NWBKGB2L\"\n",
            6,
            "iban",
            "check digits",
        ),
        (
            "[payout.sepa]\nname = \"Op\"\niban = \"TR330006100519786457841326\"\nbic = \"ISBKTRIS\"\n",
            6,
            "iban",
            "outside the SEPA scheme",
        ),
        (
            "[[payout.partners]]\nid = \"a\"\npaypal_email = \"nobody\"\n",
            6,
            "paypal_email",
            "not an email",
        ),
        (
            "[payout.sepa]\nname = \"Op\"\niban = \"DE89370400440532013000\"\nbic = \"COBADEFFXXX\"\ntown = \"Berlin\"\ncountry = \"Germany\"\n",
            9,
            "country",
            "not an ISO 3166 country code",
        ),
        (
            // the United Kingdom's code is GB
            "[payout.sepa]\nname = \"Op\"\niban = \"DE89370400440532013000\"\nbic = \"COBADEFFXXX\"\ntown = \"London\"\ncountry = \"UK\"\n",
            9,
            "country",
            "\"UK\" is not an ISO 3166 country code",
        ),
        (
            // a bank of Saint-Pierre-et-Miquelon: French IBAN, PM in the BIC
            "[payout.sepa]\nname = \"Op\"\niban = \"FR1420041010050500013M02606\"\nbic = \"BDSPPMPMXXX\"\n",
            4,
            "town",
            "the account is in PM, outside the EEA: SEPA transfers from it need the debtor's address",
        ),
        (
            "[payout.sepa]\nname = \"Op\"\niban = \"DE89370400440532013000\"\nbic = \"COBADEFFXXX\"\ntown = \"Berlin\"\npostcode = \"10117 Berlin-Mitte Nord\"\n",
            9,
            "postcode",
            "longer than 16 characters",
        ),
        (
            "[payout.sepa]\nname = \"Op\"\niban = \"DE89370400440532013000\"\nbic = \"COBADEFFXXX\"\nstreet = \"Hauptstr.\"\ncountry = \"DE\"\n",
            4,
            "town",
            "needs `town` and `country`",
        ),
        (
            "[payout.sepa]\nname = \"Op\"\niban = \"GB29 NWBK 6016 1331 9268 19\"\nbic = \"NWBKGB2L\"\n",
            4,
            "town",
            "outside the EEA: SEPA transfers from it need the debtor's address",
        ),
        (
            "[[payout.partners]]\nid = \"a\"\npaypal = \"a@example.com\"\n",
            6,
            "paypal",
            "unknown field",
        ),
    ] {
        let path = dir.path().join("programs.toml");
        std::fs::write(&path, format!("{head}{body}{prog}")).unwrap();
        let (c, err) = code(
            &db,
            &["run", "--config", path.to_str().unwrap(), "--period", "2026-11"],
        );
        assert_eq!(c, 1, "{err}");
        let want = format!("programs.toml:{line}: key `{key}`:");
        assert!(err.contains(&want), "want {want:?} in {err}");
        assert!(err.contains(what), "want {what:?} in {err}");
    }
}

#[test]
fn nightly_writes_the_payout_files_with_its_programs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let ex = repo().join("examples/payouts");
    ok(&db, &["import", ex.join("events.ndjson").to_str().unwrap()]);
    let toml = dir.path().join("settlement.toml");
    std::fs::write(
        &toml,
        format!(
            "programs = {:?}\nout = \"reports\"\ngrace_days = 3\n",
            ex.join("programs.toml").display().to_string()
        ),
    )
    .unwrap();
    ok(
        &db,
        &[
            "nightly",
            "--config",
            toml.to_str().unwrap(),
            "--now",
            "2026-12-10",
        ],
    );
    let nov = dir.path().join("reports/2026-11");
    let xml = read(&nov.join("payouts.sepa.xml"));
    assert_eq!(all(&xml, "CtrlSum"), vec!["515.45", "515.45"]);
    assert!(nov.join("payouts.paypal.USD.csv").is_file());
    // December is open: a draft gets no payout files
    let dec = dir.path().join("reports/2026-12");
    assert!(dec.join("payouts.csv").is_file());
    assert!(!dec.join("payouts.sepa.xml").exists() && !dec.join("payouts.manual.csv").exists());
}

/// review22 F4: a report of an open period wrote a complete bank file; a
/// late sale, the close and its report wrote another under a new MsgId:
/// uploading both paid every partner twice. A draft gets no payout files,
/// and those an earlier report left are removed.
#[test]
fn a_draft_gets_no_payout_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let ex = repo().join("examples/payouts");
    let cfg = ex.join("programs.toml");
    let cfg = cfg.to_str().unwrap();
    ok(&db, &["import", ex.join("events.ndjson").to_str().unwrap()]);
    ok(&db, &["run", "--config", cfg, "--period", "2026-11"]);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // left by an older binary's report of the draft
    std::fs::write(out.join("payouts.sepa.xml"), "<old/>").unwrap();
    let o = settlement(
        &db,
        &[
            "report",
            "--period",
            "2026-11",
            "--out",
            out.to_str().unwrap(),
            "--config",
            cfg,
        ],
    );
    assert!(o.status.success());
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("2026-11: no payout files for a draft"),
        "{said}"
    );
    assert!(said.contains("removed payouts.sepa.xml"), "{said}");
    assert!(out.join("payouts.csv").is_file());
    assert!(!out.join("payouts.sepa.xml").exists() && !out.join("payouts.manual.csv").exists());
    ok(&db, &["close", "--period", "2026-11"]);
    report(&db, "2026-11", &out, &["--config", cfg]);
    assert!(out.join("payouts.sepa.xml").is_file() && out.join("payouts.manual.csv").is_file());
}

/// A transfer to a bank in a SEPA country outside the EEA (here GB, and
/// Saint-Pierre-et-Miquelon, whose banks have French IBANs) needs
/// the debtor's address (EPC rulebook): without `town` and `country` in
/// `[payout.sepa]` it is paid by hand and says why; with them it is in
/// payouts.sepa.xml, which stays valid against the XSD.
#[test]
fn a_payee_outside_the_eea_needs_the_debtors_address() {
    let dir = tempfile::tempdir().unwrap();
    let example = read(&repo().join("examples/payouts/programs.toml"));
    // chloe banks in London
    let gb = example.replace(
        "iban = \"FR1420041010050500013M02606\"\nbic = \"PSSTFRPPPAR\"",
        "iban = \"GB29 NWBK 6016 1331 9268 19\"\nbic = \"NWBKGB2L\"",
    );
    assert_ne!(gb, example);
    let no_address: String = gb
        .lines()
        .filter(|l| {
            !["street", "building", "postcode", "town", "country"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    // and anna banks in Saint-Pierre-et-Miquelon, outside the EEA too,
    // with a French IBAN: her BIC says where
    let pm = |t: &str| {
        let r = t.replace(
            "iban = \"DE02120300000000202051\"\nbic = \"BYLADEM1001\"",
            "iban = \"FR7630006000011234567890189\"\nbic = \"BDSPPMPMXXX\"",
        );
        assert_ne!(r, t);
        r
    };
    std::fs::copy(
        repo().join("examples/payouts/fx.csv"),
        dir.path().join("fx.csv"),
    )
    .unwrap();
    let cases = [("without", pm(&no_address)), ("with", pm(&gb))];
    for (name, text) in cases {
        let cfg = dir.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let out = dir.path().join(name);
        settle_with(&dir.path().join(format!("{name}.db")), &out, &cfg);
        let manual = read(&out.join("payouts.manual.csv"));
        let xml = read(&out.join("payouts.sepa.xml"));
        let chloe_by_hand = manual.contains(
            "2026-11,aff_chloe,EUR,262.00,PO-2026-11-aff_chloe,the account's country GB is outside the EEA: SEPA needs the debtor's address ([payout.sepa] town and country)",
        );
        let anna_by_hand = manual.contains(
            "2026-11,aff_anna,EUR,153.45,PO-2026-11-aff_anna,the account's country PM is outside the EEA: SEPA needs the debtor's address ([payout.sepa] town and country)",
        );
        if name == "without" {
            assert!(chloe_by_hand && anna_by_hand, "{manual}");
            assert!(!xml.contains("GB29NWBK60161331926819"), "{xml}");
            assert!(!xml.contains("FR7630006000011234567890189"), "{xml}");
            assert!(!xml.contains("<PstlAdr>"), "{xml}");
            assert_eq!(all(&xml, "NbOfTxs"), vec!["1", "1"]);
        } else {
            assert!(
                !manual.contains("aff_chloe") && !manual.contains("aff_anna"),
                "{manual}"
            );
            assert!(xml.contains("<IBAN>GB29NWBK60161331926819</IBAN>"), "{xml}");
            assert!(
                xml.contains("<IBAN>FR7630006000011234567890189</IBAN>"),
                "{xml}"
            );
            assert!(xml.contains("<TwnNm>Berlin</TwnNm>"), "{xml}");
            assert_eq!(all(&xml, "NbOfTxs"), vec!["3", "3"]);
            let v = std::process::Command::new("xmllint")
                .arg("--noout")
                .arg("--schema")
                .arg(xsd())
                .arg(out.join("payouts.sepa.xml"))
                .output()
                .expect("xmllint");
            assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
        }
    }
}
