//! Secrets given to the real binary without the command line (issue 14 §6):
//! from a file, from standard input (`-`), and the admin token from a file
//! or the environment. One trailing newline is dropped.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cli::{command, finish, Bin, Run};

const SECRET: &str = "whsec_cli_secret_from_a_file_01";
const ROTATED: &str = "whsec_cli_secret_from_stdin_002";
const API_KEY: &str = "rk_test_cli_key_from_stdin_0003";

impl Bin {
    /// Runs `args` with `input` on standard input.
    fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        let mut child = command(self.dir.path(), "warn")
            .arg("--database")
            .arg(&self.db)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run salestrack");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        finish(child.wait_with_output().expect("wait"))
    }

    /// The client `name`'s secrets and API key, as stored.
    async fn stored_secrets(&self, name: &str) -> (Vec<String>, Option<String>) {
        let tracker = self.tracker().await;
        let all = tracker
            .store()
            .list_client_secrets()
            .await
            .expect("clients");
        let c = all
            .iter()
            .find(|c| c.client.name == name)
            .unwrap_or_else(|| panic!("client {name} stored"));
        (
            c.secrets.iter().map(|s| s.expose().to_string()).collect(),
            c.client.stripe_api_key.clone(),
        )
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write secret file");
        path.display().to_string()
    }
}

#[tokio::test]
async fn client_secrets_come_from_a_file_or_standard_input_not_only_arguments() {
    let Some(bin) = Bin::new() else {
        return;
    };
    assert!(bin.run(&["migrate"]).ok());
    let secret_file = bin.write("whsec.txt", &format!("{SECRET}\n"));

    // The webhook secret from a file, the API key from standard input.
    let out = bin.run_with_stdin(
        &[
            "client",
            "add",
            "--name",
            "Shop",
            "--webhook-secret-file",
            &secret_file,
            "--stripe-api-key",
            "-",
        ],
        &format!("{API_KEY}\r\n"),
    );
    assert!(out.ok(), "{out:?}");
    assert!(
        !out.all().contains(SECRET) && !out.all().contains(API_KEY),
        "{out:?}"
    );
    let (secrets, key) = bin.stored_secrets("Shop").await;
    assert_eq!(secrets, [SECRET], "one trailing newline dropped");
    assert_eq!(key.as_deref(), Some(API_KEY), "CRLF dropped");

    // The API key from a file too.
    let key_file = bin.write("rk.txt", API_KEY);
    let out = bin.run(&[
        "client",
        "add",
        "--name",
        "Other",
        "--stripe-api-key-file",
        &key_file,
    ]);
    assert!(out.ok(), "{out:?}");
    assert_eq!(
        bin.stored_secrets("Other").await.1.as_deref(),
        Some(API_KEY)
    );

    // add-secret: `-`, no argument at all (standard input), or a file.
    let out = bin.run_with_stdin(
        &["client", "add-secret", "Shop", "-"],
        &format!("{ROTATED}\n"),
    );
    assert!(out.ok(), "{out:?}");
    assert!(!out.all().contains(ROTATED), "{out:?}");
    let third = "whsec_cli_secret_no_argument_03";
    let out = bin.run_with_stdin(&["client", "add-secret", "Other"], &format!("{third}\n"));
    assert!(out.ok(), "{out:?}");
    let out = bin.run(&[
        "client",
        "add-secret",
        "Other",
        "--webhook-secret-file",
        &secret_file,
    ]);
    assert!(out.ok(), "{out:?}");
    assert_eq!(bin.stored_secrets("Shop").await.0, [SECRET, ROTATED]);
    assert_eq!(bin.stored_secrets("Other").await.0, [third, SECRET]);

    // Refused with a message: both from standard input, an empty file, a
    // missing file, a value and a file for the same secret.
    let r = bin.run_with_stdin(
        &[
            "client",
            "add",
            "--name",
            "X",
            "--webhook-secret",
            "-",
            "--stripe-api-key",
            "-",
        ],
        SECRET,
    );
    assert!(!r.ok() && r.stderr.contains("standard input"), "{r:?}");
    let empty = bin.write("empty.txt", "\n");
    let r = bin.fails(&[
        "client",
        "add",
        "--name",
        "X",
        "--webhook-secret-file",
        &empty,
    ]);
    assert!(r.stderr.contains("empty"), "{r:?}");
    bin.fails(&[
        "client",
        "add",
        "--name",
        "X",
        "--webhook-secret-file",
        "/nonexistent/x",
    ]);
    bin.fails(&[
        "client",
        "add",
        "--name",
        "X",
        "--webhook-secret",
        SECRET,
        "--webhook-secret-file",
        &secret_file,
    ]);
    assert_eq!(
        bin.tracker()
            .await
            .store()
            .list_clients()
            .await
            .unwrap()
            .len(),
        2
    );
}

/// Starts `serve` on a free port and returns once it answers `/healthz`.
fn serve_until_ready(bin: &Bin, extra: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = command(bin.dir.path(), "warn");
    cmd.arg("--database")
        .arg(&bin.db)
        .args(["serve", "--listen", &listen, "--sweep-interval", "0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(&listen).is_ok() {
            return child;
        }
        if let Some(status) = child.try_wait().expect("serve status") {
            panic!("serve exited early: {status}");
        }
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn serve_takes_the_admin_token_from_a_file_or_its_environment() {
    let Some(bin) = Bin::new() else {
        return;
    };
    let token = "admin-token-from-a-file-0001";
    let file = bin.write("token.txt", &format!("{token}\n"));
    let mut server = serve_until_ready(&bin, &["--admin-token-file", &file], &[]);
    server.kill().expect("stop serve");
    server.wait().expect("serve stopped");
    let tracker = bin.tracker().await;
    assert!(
        tracker.check_admin_token(token).await.unwrap(),
        "the file's token is in force"
    );

    let other = "admin-token-from-the-env-0002";
    let file = bin.write("token2.txt", other);
    let mut server = serve_until_ready(&bin, &[], &[("SALESTRACK_ADMIN_TOKEN_FILE", &file)]);
    server.kill().expect("stop serve");
    server.wait().expect("serve stopped");
    assert!(tracker.check_admin_token(other).await.unwrap());
    assert!(!tracker.check_admin_token(token).await.unwrap());
}
