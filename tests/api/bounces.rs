//! Bounces and complaints that come back by mail: every message goes out with a VERP return path, and
//! reports sent to it (by any MTA) become events and suppressions. Without AUTH, nothing but reports to
//! those addresses is taken.

use std::time::Duration;

use posthorn::config::Config;
use serde_json::{Value, json};

use crate::support::smtp::SmtpServer;
use crate::support::smtp_client::SmtpClient;
use crate::support::{TestApp, spawn_delivering_app, valid_message};

const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn bounces(config: &mut Config) {
    config.bounce_domain = Some("bounces.example.com".into());
    config.bounce_listen = Some("127.0.0.1:0".into());
}

/// Sends a message; waits until it is sent; its id and the return path it went out with.
async fn sent(app: &TestApp, smtp: &SmtpServer, to: &str) -> (String, String) {
    let mut message = valid_message();
    message["to"] = json!(to);
    let id = app.accept(&message).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let return_path = smtp
        .received()
        .into_iter()
        .find(|mail| mail.to == [to])
        .expect("delivered")
        .from;
    (id, return_path)
}

/// A fixture report with the message's return path and Message-ID in place, in CRLF lines.
fn fixture(name: &str, return_path: &str, message_id: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/api/fixtures/reports")
        .join(name);
    std::fs::read_to_string(path)
        .expect("fixture")
        .replace("VERP_ADDRESS", return_path)
        .replace("MESSAGE_ID", message_id)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
}

/// Delivers a report to the bounce listener as a receiving MTA would: no AUTH, null return path.
async fn report(app: &TestApp, to: &str, data: &str) -> u16 {
    let (mut client, greeting) = SmtpClient::local(app.bounce_port.expect("bounce listener")).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(client.command("EHLO mx.example.org").await.code, 250);
    let reply = client.send_message("", &[to], data).await;
    let _ = client.command("QUIT").await;
    reply.code
}

fn events(message: &Value, kind: &str) -> Vec<Value> {
    message["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == kind)
        .cloned()
        .collect()
}

async fn suppressions(app: &TestApp) -> Vec<Value> {
    let page: Value = app
        .get_json_as("/v1/suppressions", &app.default_token())
        .await;
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn messages_go_out_with_a_verp_return_path_and_its_dsn_is_a_bounce() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, bounces).await;
    let (id, return_path) = sent(&app, &smtp, "ann@example.org").await;
    assert!(
        return_path.starts_with("b-") && return_path.ends_with("@bounces.example.com"),
        "{return_path}"
    );
    let message = app.message(&id).await;
    let message_id = message["message_id"].as_str().unwrap();
    assert_eq!(
        report(
            &app,
            &return_path,
            &fixture("postfix-failed.eml", &return_path, message_id)
        )
        .await,
        250
    );
    let bounced = events(&app.message(&id).await, "email.bounced");
    assert_eq!(bounced.len(), 1);
    let data = &bounced[0]["data"];
    assert_eq!(data["recipient"], "ann@example.org");
    assert_eq!(data["status"], "5.1.1");
    assert_eq!(data["source"], "mail");
    assert!(data["reason"].as_str().unwrap().contains("User unknown"));
    let list = suppressions(&app).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["address"], "ann@example.org");
    assert_eq!(list[0]["reason"], "hard_bounce");
    assert_eq!(list[0]["message_id"], id);
    assert_eq!(
        app.metric("posthorn_reports_total", "result=\"recorded\"")
            .await,
        1.0
    );
}

#[tokio::test]
async fn reports_from_several_mtas_are_read() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, bounces).await;
    for (fixture_name, to, kind, status) in [
        (
            "exim-failed.eml",
            "bob@example.net",
            "email.bounced",
            Some("5.2.1"),
        ),
        (
            "exchange-failed.eml",
            "carol@contoso.example",
            "email.bounced",
            Some("5.1.10"),
        ),
        (
            "gmail-delayed.eml",
            "dave@example.com",
            "email.delivery_delayed",
            Some("4.4.1"),
        ),
        (
            "arf-complaint.eml",
            "erin@isp.example",
            "email.complained",
            None,
        ),
    ] {
        let (id, return_path) = sent(&app, &smtp, to).await;
        let message_id = app.message(&id).await["message_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            report(
                &app,
                &return_path,
                &fixture(fixture_name, &return_path, &message_id)
            )
            .await,
            250,
            "{fixture_name}"
        );
        let found = events(&app.message(&id).await, kind);
        assert_eq!(found.len(), 1, "{fixture_name}: {found:?}");
        assert_eq!(found[0]["data"]["recipient"], to, "{fixture_name}");
        if let Some(status) = status {
            assert_eq!(found[0]["data"]["status"], status, "{fixture_name}");
        }
    }
    let mut list: Vec<(String, String)> = suppressions(&app)
        .await
        .iter()
        .map(|entry| {
            (
                entry["address"].as_str().unwrap().to_owned(),
                entry["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    list.sort();
    assert_eq!(
        list,
        [
            ("bob@example.net".to_owned(), "hard_bounce".to_owned()),
            ("carol@contoso.example".to_owned(), "hard_bounce".to_owned()),
            ("erin@isp.example".to_owned(), "complaint".to_owned()),
        ],
        "a delay suppresses nothing"
    );
}

#[tokio::test]
async fn without_auth_only_reports_to_return_paths_are_taken() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |config| {
        bounces(config);
        config.submission_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let (_, return_path) = sent(&app, &smtp, "ann@example.org").await;
    for port in [app.bounce_port.unwrap(), app.submission.0.unwrap()] {
        let (mut client, _) = SmtpClient::local(port).await;
        assert_eq!(client.command("EHLO relay.example.org").await.code, 250);
        assert_eq!(
            client.command("MAIL FROM:<spammer@example.org>").await.code,
            250
        );
        // A return path with its MAC changed is not ours.
        let (local, domain) = return_path.split_once('@').unwrap();
        let last = if local.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{last}@{domain}", &local[..local.len() - 1]);
        for victim in [
            "victim@example.org",
            "postmaster@bounces.example.com",
            forged.as_str(),
            &format!("b-{}@bounces.example.com", "0".repeat(52)),
        ] {
            let reply = client.command(&format!("RCPT TO:<{victim}>")).await;
            assert_eq!(reply.code, 550, "{victim}: {reply:?}");
            assert!(reply.text().contains("5.7.1"), "{reply:?}");
        }
        // The return path itself is taken.
        let reply = client.command(&format!("RCPT TO:<{return_path}>")).await;
        assert_eq!(reply.code, 250, "{reply:?}");
        let _ = client.command("QUIT").await;
    }
    assert_eq!(smtp.received().len(), 1, "nothing was relayed");
}

#[tokio::test]
async fn a_report_that_cannot_be_read_is_kept_and_counted() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, bounces).await;
    let (id, return_path) = sent(&app, &smtp, "ann@example.org").await;
    let junk = "From: someone@example.org\r\nSubject: out of office\r\n\r\nI am away.\r\n";
    assert_eq!(report(&app, &return_path, junk).await, 250);
    assert_eq!(
        app.metric("posthorn_reports_total", "result=\"malformed\"")
            .await,
        1.0
    );
    let message = app.message(&id).await;
    assert!(events(&message, "email.bounced").is_empty());
    if crate::support::database::is_postgres() {
        let kept = app
            .database
            .scalar("SELECT count(*) FROM inbound_reports WHERE source = 'mail'")
            .await;
        assert_eq!(kept, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_postfix_writes_comes_back_and_suppresses_the_address() {
    if crate::support::postfix::not_root() {
        eprintln!("skipped: a private Postfix instance needs root");
        return;
    }
    // The recipient's server refuses the address.
    let far = SmtpServer::start_with(crate::support::smtp::Script::refusing(
        "ann@example.org",
        "550 5.1.1 <ann@example.org>: user unknown",
    ))
    .await;
    // posthorn sends through Postfix; Postfix sends the bounce domain's mail to posthorn's listener.
    let bounce_port = crate::support::peers::free_port();
    let postfix = crate::support::postfix::PrivatePostfix::start(|etc| {
        std::fs::write(
            etc.join("transport"),
            format!("bounces.example.com smtp:[127.0.0.1]:{bounce_port}\n"),
        )
        .expect("transport map");
        format!(
            "relayhost = [127.0.0.1]:{}\n\
             transport_maps = texthash:{}/transport\n",
            far.port,
            etc.display()
        )
    });
    let app = crate::support::spawn_app_with(|config| {
        crate::support::fast_delivery(config);
        config.smtp_url = Some(posthorn::secret::Secret::new(format!(
            "smtp://127.0.0.1:{}",
            postfix.port
        )));
        config.bounce_domain = Some("bounces.example.com".into());
        config.bounce_listen = Some(format!("127.0.0.1:{bounce_port}"));
    })
    .await;
    let mut message = valid_message();
    message["to"] = json!("ann@example.org");
    let id = app.accept(&message).await;
    // Postfix takes it (posthorn's part is done), then bounces it back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let bounced = loop {
        let found = events(&app.message(&id).await, "email.bounced");
        if !found.is_empty() {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no bounce came back:\n{}",
            postfix.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(bounced[0]["data"]["recipient"], "ann@example.org");
    assert_eq!(bounced[0]["data"]["status"], "5.1.1");
    let list = suppressions(&app).await;
    assert_eq!(list[0]["address"], "ann@example.org", "{list:?}");
    assert!(
        postfix.log().contains("status=bounced"),
        "{}",
        postfix.log()
    );
}
