//! A host that sends with Postfix (PHP's `mail()`, cron) relays through posthorn: `relayhost` pointing at
//! the submission port, SASL with the caller's `sub` and token (Debian's libsasl2-modules).

use std::time::{Duration, Instant};

use super::{password, port, spawn};
use crate::support::postfix::{PrivatePostfix, not_root, set_mode};
use crate::support::smtp::SmtpServer;
use crate::support::smtp_client::SmtpClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_with_relayhost_and_sasl_relays_through_posthorn() {
    if not_root() {
        eprintln!("skipped: a private Postfix instance needs root");
        return;
    }
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |_| {}).await;
    let relay = format!("[127.0.0.1]:{}", port(&app));
    let secret = password(&app);
    let postfix = PrivatePostfix::start(|etc| {
        std::fs::write(
            etc.join("sasl_passwd"),
            format!("{relay} tester:{secret}\n"),
        )
        .expect("password map");
        set_mode(&etc.join("sasl_passwd"), 0o600);
        format!(
            "relayhost = {relay}\n\
             smtp_sasl_auth_enable = yes\n\
             smtp_sasl_password_maps = texthash:{}/sasl_passwd\n\
             smtp_sasl_security_options = noanonymous\n\
             smtp_sasl_mechanism_filter = plain, login\n",
            etc.display()
        )
    });
    // What PHP's mail() hands its local MTA.
    let (mut client, greeting) = SmtpClient::local(postfix.port).await;
    assert_eq!(greeting.code, 220, "{greeting:?}\n{}", postfix.log());
    assert_eq!(client.command("HELO app-host").await.code, 250);
    let reply = client
        .send_message(
            "shop@example.com",
            &["ann@example.org"],
            "From: Shop <shop@example.com>\r\nTo: ann@example.org\r\nSubject: via postfix\r\n\r\nHello.\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while upstream.received().is_empty() {
        assert!(Instant::now() < deadline, "not relayed:\n{}", postfix.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mail = &upstream.received()[0];
    assert_eq!(mail.header("Subject").as_deref(), Some("via postfix"));
    let page: serde_json::Value = app
        .client
        .get(format!("{}/v1/messages", app.address))
        .bearer_auth(app.token("tester", &[posthorn::auth::Scope::Read]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["source"], "smtp", "{page}");
    assert!(postfix.log().contains("status=sent"), "{}", postfix.log());
}
