//! Rough edges of the command line: arguments that name the wrong kind of thing are refused with
//! a message that says what is wrong, before anything is contacted or written.

mod common;

use common::{output_text, run_nixipfs, TestDir, TestServer};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_mirror_directory_that_is_a_file_or_cannot_be_created_is_refused_first() {
    let dir = TestDir::new("mirror-dir-arg");
    let release = dir.join("release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join("store-paths"), "").unwrap();
    let file = dir.write("a-file", "not a directory");
    let server = TestServer::builder().start();
    let update = |outdir: &std::path::Path| {
        run_nixipfs([
            "update-binary-cache".as_ref(),
            "--release".as_ref(),
            release.as_os_str(),
            "--outdir".as_ref(),
            outdir.as_os_str(),
            "--cache".as_ref(),
            server.url().as_ref(),
            "--no-check-sigs".as_ref(),
        ])
    };

    let out = update(&file);
    assert!(!out.status.success(), "{}", output_text(&out));
    let want = format!(
        "the mirror directory {} is a file, not a directory",
        file.display()
    );
    assert!(stderr(&out).contains(&want), "{}", output_text(&out));
    assert!(
        !stderr(&out).contains("File exists"),
        "{}",
        output_text(&out)
    );

    let below = file.join("mirror");
    let out = update(&below);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = stderr(&out);
    let want = format!("cannot create the mirror directory {}: ", below.display());
    assert!(err.contains(&want), "{}", output_text(&out));
    assert_eq!(err.matches("os error").count(), 1, "{}", output_text(&out));

    let out = run_nixipfs([
        "create-channel-release".as_ref(),
        "--channel".as_ref(),
        "nixos-test".as_ref(),
        "--project".as_ref(),
        "nixos".as_ref(),
        "--jobset".as_ref(),
        "trunk".as_ref(),
        "--job".as_ref(),
        "tested".as_ref(),
        "--outdir".as_ref(),
        file.as_os_str(),
        "--hydra".as_ref(),
        server.url().as_ref(),
        "--cache".as_ref(),
        server.url().as_ref(),
    ]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let want = format!(
        "the output directory {} is a file, not a directory",
        file.display()
    );
    assert!(stderr(&out).contains(&want), "{}", output_text(&out));
    assert!(server.requests().is_empty(), "{}", server.log_summary());
}
