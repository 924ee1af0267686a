//! A host that sends with Postfix (PHP's `mail()`, cron) relays through posthorn: `relayhost` pointing at
//! the submission port, SASL with the caller's `sub` and token (Debian's libsasl2-modules).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::clients::run;
use super::{password, port, spawn};
use crate::support::peers::free_port;
use crate::support::smtp::SmtpServer;
use crate::support::smtp_client::SmtpClient;

/// A private Postfix instance (its own configuration and queue), stopped when dropped.
struct PrivatePostfix {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostfix {
    /// Starts one that accepts mail from this host on a free port and relays all of it to
    /// `relay_port` with SASL as `user` / `password`.
    fn start(relay_port: u16, user: &str, password: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("posthorn-test-postfix")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        set_mode(root, 0o755);
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir_all(root.join(sub)).expect("directory");
        }
        run(Command::new("chown").args(["postfix", &root.join("data").display().to_string()]));
        let port = free_port();
        let relay = format!("[127.0.0.1]:{relay_port}");
        std::fs::write(
            root.join("etc/sasl_passwd"),
            format!("{relay} {user}:{password}\n"),
        )
        .expect("password map");
        set_mode(&root.join("etc/sasl_passwd"), 0o600);
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {root}/queue\n\
             data_directory = {root}/data\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             maillog_file = {root}/maillog\n\
             maillog_file_prefixes = {root}\n\
             myhostname = app-host.localdomain\n\
             mydestination =\n\
             local_recipient_maps =\n\
             local_transport = error:local delivery is disabled\n\
             alias_maps =\n\
             alias_database =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             smtp_dns_support_level = disabled\n\
             smtp_host_lookup = native\n\
             relayhost = {relay}\n\
             smtp_sasl_auth_enable = yes\n\
             smtp_sasl_password_maps = texthash:{root}/etc/sasl_passwd\n\
             smtp_sasl_security_options = noanonymous\n\
             smtp_sasl_mechanism_filter = plain, login\n\
             smtp_tls_security_level = none\n",
            root = root.display()
        );
        std::fs::write(root.join("etc/main.cf"), main_cf).expect("main.cf");
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n\
             pickup unix n - n 60 1 pickup\n\
             cleanup unix n - n - 0 cleanup\n\
             qmgr unix n - n 300 1 qmgr\n\
             rewrite unix - - n - - trivial-rewrite\n\
             bounce unix - - n - 0 bounce\n\
             defer unix - - n - 0 bounce\n\
             trace unix - - n - 0 bounce\n\
             verify unix - - n - 1 verify\n\
             flush unix n - n 1000? 0 flush\n\
             proxymap unix - - n - - proxymap\n\
             smtp unix - - n - - smtp\n\
             relay unix - - n - - smtp\n\
             showq unix n - n - - showq\n\
             error unix - - n - - error\n\
             retry unix - - n - - error\n\
             discard unix - - n - - discard\n\
             anvil unix - - n - 1 anvil\n\
             scache unix - - n - 1 scache\n\
             postlog unix-dgram n - n - 1 postlogd\n"
        );
        std::fs::write(root.join("etc/master.cf"), master_cf).expect("master.cf");
        run(Command::new("postfix").args(["-c", &root.join("etc").display().to_string(), "start"]));
        Self { dir, port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for PrivatePostfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .args([
                "-c",
                &self.dir.path().join("etc").display().to_string(),
                "stop",
            ])
            .output();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_with_relayhost_and_sasl_relays_through_posthorn() {
    if not_root() {
        eprintln!("skipped: a private Postfix instance needs root");
        return;
    }
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |_| {}).await;
    let postfix = PrivatePostfix::start(port(&app), "tester", &password(&app));
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

/// Whether this process is not root (Postfix's master must start as root).
fn not_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() != "0")
        .unwrap_or(true)
}
