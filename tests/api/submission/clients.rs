//! Real clients send through posthorn as they would through any submission server: Python's smtplib
//! (plain on loopback, STARTTLS, implicit TLS), Nodemailer, curl and swaks.

use std::process::Command;
use std::time::Duration;

use super::{MESSAGE, password, port, spawn};
use crate::support::TestApp;
use crate::support::peers::TestCertificates;
use crate::support::smtp::SmtpServer;

const WAIT: Duration = Duration::from_secs(20);

/// Runs a program to completion, asserting it succeeded; its stdout.
pub(super) fn run(command: &mut Command) -> String {
    let output = command.output().expect("the client runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn python() -> String {
    std::env::var("POSTHORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

const SMTPLIB: &str = r#"
import smtplib, ssl, sys
mode, port, token, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=ca) if ca else None
if mode == "tls":
    client = smtplib.SMTP_SSL("localhost", port, context=context, timeout=10)
else:
    client = smtplib.SMTP("localhost", port, timeout=10)
    if mode == "starttls":
        client.starttls(context=context)
client.login("tester", token)
message = "From: Shop <shop@example.com>\r\nTo: ann@example.org\r\nSubject: smtplib " + mode + "\r\n\r\nHello.\r\n"
client.mail("shop@example.com")
client.rcpt("ann@example.org")
client.rcpt("audit@example.org")
code, reply = client.data(message)
assert code == 250, (code, reply)
print(reply.decode())
client.quit()
"#;

/// The id in a `250 2.0.0 queued as ID` reply text.
fn queued_id(reply: &str) -> String {
    reply
        .trim()
        .rsplit(' ')
        .next()
        .expect("an id")
        .trim_end_matches(['>', ']'])
        .to_owned()
}

async fn assert_delivered(app: &TestApp, upstream: &SmtpServer, id: &str, subject: &str) {
    let shown = app.wait_for_status(id, "sent", WAIT).await;
    assert_eq!(shown["source"], "smtp");
    let received = upstream.received();
    let mail = received
        .iter()
        .find(|mail| mail.header("Subject").as_deref() == Some(subject))
        .unwrap_or_else(|| panic!("{subject} did not arrive"));
    assert_eq!(mail.from, "shop@example.com");
    assert!(mail.to.contains(&"ann@example.org".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_sends_in_plain_text_on_loopback_with_starttls_and_with_implicit_tls() {
    let certificates = TestCertificates::generate();
    let upstream = SmtpServer::start().await;
    let dir = certificates.dir.path().to_owned();
    let app = spawn(&upstream, move |config| {
        config.submission_tls_listen = Some("127.0.0.1:0".into());
        config.submission_tls_cert = Some(dir.join("server.pem"));
        config.submission_tls_key = Some(dir.join("server.key"));
    })
    .await;
    let ca = certificates.ca().display().to_string();
    for (mode, port, ca) in [
        ("plain", port(&app), ""),
        ("starttls", port(&app), ca.as_str()),
        ("tls", app.submission.1.expect("TLS port"), ca.as_str()),
    ] {
        let output = run(Command::new(python()).args([
            "-c",
            SMTPLIB,
            mode,
            &port.to_string(),
            &password(&app),
            ca,
        ]));
        assert!(output.starts_with("2.0.0 queued as "), "{mode}: {output}");
        let id = queued_id(&output);
        assert_delivered(&app, &upstream, &id, &format!("smtplib {mode}")).await;
        let mail = upstream
            .received()
            .into_iter()
            .find(|mail| mail.header("Subject").as_deref() == Some(&format!("smtplib {mode}")))
            .expect("arrived");
        assert_eq!(
            mail.to,
            vec!["ann@example.org", "audit@example.org"],
            "{mode}"
        );
    }
}

const NODEMAILER: &str = r#"
const nodemailer = require("nodemailer");
const [port, token] = process.argv.slice(1);
const transport = nodemailer.createTransport({
  host: "127.0.0.1", port: Number(port), secure: false, auth: { user: "tester", pass: token },
});
transport.sendMail({
  from: "Shop <shop@example.com>", to: "ann@example.org", bcc: "audit@example.org",
  subject: "nodemailer", text: "Hello from Nodemailer.",
  attachments: [{ filename: "notes.txt", content: "some notes" }],
}).then((info) => { console.log(info.response); }, (error) => { console.error(error); process.exit(1); });
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodemailer_sends_with_bcc_and_an_attachment() {
    let Ok(node_path) = std::env::var("POSTHORN_TEST_NODE_PATH") else {
        panic!(
            "POSTHORN_TEST_NODE_PATH is not set: run ./scripts/test.sh (it installs Nodemailer)"
        );
    };
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |_| {}).await;
    let output = run(Command::new("node").env("NODE_PATH", node_path).args([
        "-e",
        NODEMAILER,
        &port(&app).to_string(),
        &password(&app),
    ]));
    assert!(output.starts_with("250 2.0.0 queued as "), "{output}");
    let id = queued_id(&output);
    assert_delivered(&app, &upstream, &id, "nodemailer").await;
    let mail = upstream.received().pop().expect("arrived");
    assert_eq!(mail.to, vec!["ann@example.org", "audit@example.org"]);
    assert!(mail.header("Bcc").is_none());
    assert!(mail.data().contains("notes.txt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_a_message_file() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |_| {}).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), MESSAGE.replace("Your order", "curl")).unwrap();
    let output = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--verbose",
            "--url",
            &format!("smtp://127.0.0.1:{}", port(&app)),
            "--mail-from",
            "shop@example.com",
            "--mail-rcpt",
            "ann@example.org",
            "--upload-file",
            &file.path().display().to_string(),
            "--user",
            &format!("tester:{}", password(&app)),
        ])
        .output()
        .expect("curl runs");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let reply = log
        .lines()
        .find(|line| line.contains("queued as"))
        .unwrap_or_else(|| panic!("no queued-as reply: {log}"));
    assert_delivered(&app, &upstream, &queued_id(reply), "curl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_pipelines_its_commands_and_authenticates_with_login() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |_| {}).await;
    let output = run(Command::new("swaks").args([
        "--server",
        "127.0.0.1",
        "--port",
        &port(&app).to_string(),
        "--auth",
        "LOGIN",
        "--auth-user",
        "tester",
        "--auth-password",
        &password(&app),
        "--from",
        "shop@example.com",
        "--to",
        "ann@example.org",
        "--pipeline",
        "--header",
        "Subject: swaks",
        "--body",
        "Hello from swaks.",
    ]));
    let reply = output
        .lines()
        .find(|line| line.contains("queued as"))
        .unwrap_or_else(|| panic!("no queued-as reply: {output}"));
    assert_delivered(&app, &upstream, &queued_id(reply), "swaks").await;
}
