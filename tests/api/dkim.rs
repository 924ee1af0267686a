//! DKIM: a message whose From domain has keys leaves with one signature per key, which an independent
//! verifier (dkimpy, through `support/dkim_verify.py`) accepts with the published TXT records, whichever
//! way the message came in and also after a relay through Postfix; other domains' mail leaves unsigned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use posthorn::config::DkimConfig;
use posthorn::delivery::dkim::{DkimAlgorithm, generate};
use serde_json::json;

use crate::support::postfix::{PrivatePostfix, not_root, set_mode};
use crate::support::smtp::{Received, SmtpServer};
use crate::support::smtp_client::SmtpClient;
use crate::support::{spawn_delivering_app, valid_message};

const WAIT: Duration = Duration::from_secs(15);

/// The headers signed when a message has them.
const SIGNED: &[&str] = &[
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
    "list-unsubscribe",
    "list-unsubscribe-post",
];

/// A key in a file the configuration names, and what DNS would publish for it.
struct Key {
    config: DkimConfig,
    txt: String,
}

impl Key {
    /// A fresh key for `selector._domainkey.domain`, written into `dir`.
    fn new(dir: &Path, domain: &str, selector: &str, algorithm: DkimAlgorithm) -> Self {
        let (pem, txt) = match algorithm {
            // 2048-bit generation takes seconds in a test build: one RSA key per test process.
            DkimAlgorithm::RsaSha256 => {
                static RSA: OnceLock<(String, String)> = OnceLock::new();
                RSA.get_or_init(|| {
                    let key = generate(DkimAlgorithm::RsaSha256).expect("an RSA key");
                    (key.private_pem, key.dns_txt)
                })
                .clone()
            }
            DkimAlgorithm::Ed25519Sha256 => {
                let key = generate(algorithm).expect("an Ed25519 key");
                (key.private_pem, key.dns_txt)
            }
        };
        let path = dir.join(format!("{selector}.{domain}.pem"));
        std::fs::write(&path, pem).expect("key written");
        set_mode(&path, 0o600);
        Self {
            config: DkimConfig {
                domain: domain.to_owned(),
                selector: selector.to_owned(),
                private_key_file: path,
                algorithm: Some(algorithm.as_str().to_owned()),
            },
            txt,
        }
    }
}

fn python() -> String {
    std::env::var("POSTHORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// dkimpy's verdict on every signature of `message`, with `keys` published: whether all of them
/// verified, and the verifier's report.
fn dkimpy(message: &str, keys: &[&Key]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("message.eml");
    std::fs::write(&path, message).expect("message written");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/support/dkim_verify.py");
    let mut command = Command::new(python());
    command.arg(script).arg(&path);
    for key in keys {
        command.args([&key.config.selector, &key.config.domain, &key.txt]);
    }
    let output = command.output().expect("python runs");
    let verdict = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let report = format!("{verdict}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        verdict == "pass" || verdict == "fail",
        "dkim_verify.py did not run (./scripts/test.sh installs dkimpy): {report}"
    );
    (output.status.success() && verdict == "pass", report)
}

/// The message as a mailbox holds it: dot-stuffing undone, ending in the CRLF before the final dot.
fn delivered(mail: &Received) -> String {
    format!("{}\r\n", mail.data())
}

/// The head of `message`, unfolded, one field a line.
fn head(message: &str) -> Vec<String> {
    let head = message.split("\r\n\r\n").next().expect("a head");
    head.replace("\r\n\t", " ")
        .replace("\r\n ", " ")
        .split("\r\n")
        .map(str::to_owned)
        .collect()
}

/// The tags of each DKIM-Signature, whitespace removed from the values.
fn signatures(message: &str) -> Vec<BTreeMap<String, String>> {
    head(message)
        .iter()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("DKIM-Signature").then(|| {
                value
                    .split(';')
                    .filter_map(|tag| {
                        let (tag, value) = tag.split_once('=')?;
                        Some((tag.trim().to_owned(), value.split_whitespace().collect()))
                    })
                    .collect::<BTreeMap<String, String>>()
            })
        })
        .collect()
}

/// Asserts that `h=` names each of [`SIGNED`] the message has, as often as it has it, and nothing else.
fn assert_signs_the_headers_present(message: &str, tags: &BTreeMap<String, String>) {
    let mut signed: Vec<String> = tags["h"].split(':').map(str::to_ascii_lowercase).collect();
    signed.sort();
    let mut present: Vec<String> = head(message)
        .iter()
        .filter_map(|line| Some(line.split_once(':')?.0.to_ascii_lowercase()))
        .filter(|name| SIGNED.contains(&name.as_str()))
        .collect();
    present.sort();
    assert_eq!(signed, present, "h= of {tags:?}");
    for name in ["from", "to", "subject", "date", "message-id"] {
        assert!(signed.contains(&name.to_owned()), "{name} in {signed:?}");
    }
}

/// `message` with one letter of its body in the other case.
fn with_changed_body(message: &str) -> String {
    let start = message.find("\r\n\r\n").expect("a body") + 4;
    let mut bytes = message.as_bytes().to_vec();
    let letter = bytes[start..]
        .iter()
        .position(u8::is_ascii_alphabetic)
        .expect("a letter in the body");
    bytes[start + letter] ^= 0x20;
    String::from_utf8(bytes).expect("ASCII")
}

#[tokio::test]
async fn a_message_from_a_signing_domain_arrives_signed_and_a_changed_body_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut key = Key::new(
        dir.path(),
        "example.com",
        "mail2025",
        DkimAlgorithm::RsaSha256,
    );
    // Left out, the algorithm is rsa-sha256.
    key.config.algorithm = None;
    let smtp = SmtpServer::start().await;
    let config = key.config.clone();
    let app = spawn_delivering_app(&smtp, move |c| c.dkim = vec![config]).await;
    let id = app.accept(&valid_message()).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let message = delivered(&smtp.wait_for(1, WAIT).await[0]);

    let found = signatures(&message);
    assert_eq!(found.len(), 1, "{message}");
    let tags = &found[0];
    assert_eq!(tags["v"], "1");
    assert_eq!(tags["d"], "example.com");
    assert_eq!(tags["s"], "mail2025");
    assert_eq!(tags["a"], "rsa-sha256");
    assert_eq!(tags["c"], "relaxed/relaxed");
    assert_signs_the_headers_present(&message, tags);
    assert!(
        message.starts_with("DKIM-Signature:"),
        "the signature comes first: {message}"
    );

    let (verified, report) = dkimpy(&message, &[&key]);
    assert!(verified, "{report}\n{message}");
    let (verified, report) = dkimpy(&with_changed_body(&message), &[&key]);
    assert!(!verified, "a changed body still verified: {report}");
}

#[tokio::test]
async fn every_selector_of_the_domain_signs_with_rsa_and_ed25519_alike() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rsa = Key::new(dir.path(), "example.com", "rsa1", DkimAlgorithm::RsaSha256);
    let ed = Key::new(
        dir.path(),
        "example.com",
        "ed1",
        DkimAlgorithm::Ed25519Sha256,
    );
    let other = Key::new(
        dir.path(),
        "example.net",
        "net1",
        DkimAlgorithm::Ed25519Sha256,
    );
    let smtp = SmtpServer::start().await;
    let configs = vec![rsa.config.clone(), ed.config.clone(), other.config.clone()];
    let app = spawn_delivering_app(&smtp, move |c| c.dkim = configs).await;
    let mut body = valid_message();
    body["cc"] = json!("Bo <bo@example.org>");
    body["reply_to"] = json!("help@example.com");
    let id = app.accept(&body).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let message = delivered(&smtp.wait_for(1, WAIT).await[0]);

    let found = signatures(&message);
    let selectors: BTreeSet<(&str, &str)> = found
        .iter()
        .map(|tags| (tags["s"].as_str(), tags["a"].as_str()))
        .collect();
    assert_eq!(
        selectors,
        BTreeSet::from([("ed1", "ed25519-sha256"), ("rsa1", "rsa-sha256")]),
        "{message}"
    );
    for tags in &found {
        assert_eq!(tags["d"], "example.com");
        assert_signs_the_headers_present(&message, tags);
    }
    let (verified, report) = dkimpy(&message, &[&rsa, &ed]);
    assert!(verified, "{report}\n{message}");
    // Each signature is checked on its own: without the Ed25519 record, one of them fails.
    let (verified, report) = dkimpy(&message, &[&rsa]);
    assert!(!verified, "{report}");
}

#[tokio::test]
async fn a_domain_without_a_key_sends_unsigned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = Key::new(
        dir.path(),
        "example.com",
        "s1",
        DkimAlgorithm::Ed25519Sha256,
    );
    let smtp = SmtpServer::start().await;
    let config = key.config.clone();
    let app = spawn_delivering_app(&smtp, move |c| c.dkim = vec![config]).await;
    // A key signs its own domain only: not another, not a subdomain.
    for (from, to) in [
        ("News <news@example.net>", "a@example.org"),
        ("Shop <shop@mail.example.com>", "b@example.org"),
        ("Shop <shop@example.com>", "c@example.org"),
    ] {
        let mut body = valid_message();
        body["from"] = json!(from);
        body["to"] = json!(to);
        let id = app.accept(&body).await;
        app.wait_for_status(&id, "sent", WAIT).await;
    }
    let received = smtp.wait_for(3, WAIT).await;
    let signed = |to: &str| {
        let mail = received
            .iter()
            .find(|mail| mail.to == [to])
            .expect("delivered");
        signatures(&delivered(mail)).len()
    };
    assert_eq!(signed("a@example.org"), 0, "example.net has no key");
    assert_eq!(signed("b@example.org"), 0, "mail.example.com has no key");
    assert_eq!(signed("c@example.org"), 1, "example.com has one");
}

#[tokio::test]
async fn a_message_submitted_over_smtp_is_signed_with_the_headers_posthorn_adds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = Key::new(
        dir.path(),
        "example.com",
        "sub1",
        DkimAlgorithm::Ed25519Sha256,
    );
    let upstream = SmtpServer::start().await;
    let config = key.config.clone();
    let app = crate::submission::spawn(&upstream, move |c| c.dkim = vec![config]).await;
    let (mut client, greeting) = SmtpClient::local(crate::submission::port(&app)).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    client
        .login("tester", &crate::submission::password(&app))
        .await;
    let reply = client
        .send_message(
            "shop@example.com",
            &["ann@example.org"],
            crate::submission::MESSAGE,
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let _ = client.command("QUIT").await;
    let message = delivered(&upstream.wait_for(1, WAIT).await[0]);

    let found = signatures(&message);
    assert_eq!(found.len(), 1, "{message}");
    assert_eq!(found[0]["s"], "sub1");
    // The caller's message had no Date and no Message-ID; posthorn's are signed with the rest.
    assert_signs_the_headers_present(&message, &found[0]);
    let (verified, report) = dkimpy(&message, &[&key]);
    assert!(verified, "{report}\n{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_message_still_verifies_after_a_relay_through_postfix() {
    if not_root() {
        eprintln!("skipped: a private Postfix instance needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let rsa = Key::new(dir.path(), "example.com", "rsa1", DkimAlgorithm::RsaSha256);
    let ed = Key::new(
        dir.path(),
        "example.com",
        "ed1",
        DkimAlgorithm::Ed25519Sha256,
    );
    // posthorn sends through Postfix, which relays to the recipient's server.
    let far = SmtpServer::start().await;
    let postfix = PrivatePostfix::start(|_| format!("relayhost = [127.0.0.1]:{}\n", far.port));
    let configs = vec![rsa.config.clone(), ed.config.clone()];
    let app = crate::support::spawn_app_with(|config| {
        crate::support::fast_delivery(config);
        config.smtp_url = Some(posthorn::secret::Secret::new(format!(
            "smtp://127.0.0.1:{}",
            postfix.port
        )));
        config.dkim = configs;
    })
    .await;
    let mut body = valid_message();
    body["cc"] = json!("Bo <bo@example.org>");
    app.accept(&body).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while far.received().is_empty() {
        assert!(Instant::now() < deadline, "not relayed:\n{}", postfix.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mail = &far.received()[0];
    assert!(
        mail.header("Received").is_some(),
        "Postfix adds its Received"
    );
    let message = delivered(mail);
    assert_eq!(signatures(&message).len(), 2, "{message}");
    let (verified, report) = dkimpy(&message, &[&rsa, &ed]);
    assert!(verified, "{report}\n{message}");
}
