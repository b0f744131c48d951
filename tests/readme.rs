//! The README's commands do what it says: its "Running the edge locally"
//! block runs as written against the real worker (port and token swapped
//! for the test's), and the two commands at the top are `make demo` and
//! `make test`.

use e2e::harness::{root, Worker, ADMIN_TOKEN};

fn block_after(readme: &str, heading: &str) -> String {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let rest = &readme[start..];
    let open = rest.find("```sh\n").expect("a sh block") + 6;
    let close = rest[open..].find("```").expect("closed block");
    rest[open..open + close].to_string()
}

#[test]
fn the_first_two_commands_are_demo_and_test() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let first = block_after(&readme, "# ptrack");
    let cmds: Vec<&str> = first
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .collect();
    assert_eq!(cmds[..2], ["make demo", "make test"]);
}

#[test]
fn the_local_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let script = block_after(&readme, "## Running the edge locally");
    let w = Worker::start();
    let script = script
        .replace("localhost:8787", &format!("127.0.0.1:{}", w.port))
        .replace("dev-admin-token", ADMIN_TOKEN)
        .replace("curl ", "curl -sS --fail-with-body ");
    let out = std::process::Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The last command creates a link, answered as the README shows.
    let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(answers.len(), 3, "{stdout}");
    assert_eq!(answers[0]["pixel"], true);
    assert_eq!(answers[1]["status"], "approved");
    let v = &answers[2];
    assert!(v["slug"].is_string());
    assert!(v["url"].as_str().unwrap().contains("/c/"));
}
