//! `nixipfs completions SHELL` and `nixipfs man`: what the install step of the README puts in
//! place is valid for the programs that read it and names every subcommand.

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::run_command;
use common::{assert_success, run_nixipfs, TestDir};

const SUBCOMMANDS: [&str; 9] = [
    "create-channel-release",
    "update-binary-cache",
    "garbage-collect",
    "create-nixipfs",
    "release-nixos",
    "verify",
    "status",
    "cid",
    "completions",
];

#[test]
fn the_bash_completion_script_is_valid_bash_and_completes_every_subcommand() {
    let out = run_nixipfs(["completions", "bash"]);
    assert_success(&out);
    let script = String::from_utf8(out.stdout).unwrap();
    let dir = TestDir::new("completions");
    let file = dir.write("nixipfs.bash", &script);
    // Loaded by a real bash, asked to complete `nixipfs ` and `nixipfs verify --`.
    let probe = format!(
        "source {file}\n\
         COMP_WORDS=(nixipfs ''); COMP_CWORD=1; _nixipfs nixipfs '' nixipfs; echo \"${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(nixipfs verify --); COMP_CWORD=2; _nixipfs nixipfs -- verify; echo \"${{COMPREPLY[*]}}\"",
        file = file.display()
    );
    let out = run_command(
        Command::new("bash").args(["--norc", "-c", &probe]),
        Duration::from_secs(30),
    );
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let top: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    for sub in SUBCOMMANDS {
        assert!(top.contains(&sub), "{sub} is not completed: {top:?}");
    }
    let verify = lines.next().unwrap_or("");
    for flag in ["--dir", "--quick", "--full", "--trusted-public-key"] {
        assert!(verify.contains(flag), "{flag} is not completed: {verify}");
    }
}

#[test]
fn the_man_page_is_roff_that_names_every_subcommand() {
    let out = run_nixipfs(["man"]);
    assert_success(&out);
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.contains(".TH nixipfs 1"),
        "{}",
        &page[..page.len().min(300)]
    );
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!("nixipfs\\-{}", sub.replace('-', "\\-")))
                || page.contains(sub.replace('-', "\\-").as_str()),
            "{sub} is not in the page"
        );
    }
}
