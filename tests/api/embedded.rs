//! The first five minutes: `posthorn serve` in an empty directory, with no database server and no
//! configuration, accepts mail, writes it to the outbox, and keeps everything across a restart.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::peers::free_port;
use crate::support::valid_message;

struct Serve {
    child: Child,
    address: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary in `dir` with no `POSTHORN_*` variable but the listen address and `extra`.
fn posthorn(dir: &Path, extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_posthorn"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("POSTHORN_LOG_FORMAT", "json")
        .stdin(Stdio::null());
    for (name, value) in extra {
        command.env(name, value);
    }
    command
}

async fn serve(dir: &Path, port: u16, extra: &[(&str, &str)]) -> Serve {
    let listen = format!("127.0.0.1:{port}");
    let child = posthorn(dir, extra)
        .env("POSTHORN_LISTEN", &listen)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("serve-{port}.log"))).unwrap())
        .spawn()
        .expect("start posthorn");
    let server = Serve {
        child,
        address: format!("http://{listen}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(response) = client
            .get(format!("{}/readyz", server.address))
            .send()
            .await
            && response.status() == 200
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(dir.join(format!("serve-{port}.log"))).unwrap_or_default();
    panic!("posthorn did not become ready:\n{log}");
}

fn token(dir: &Path, extra: &[(&str, &str)]) -> String {
    let output = posthorn(dir, extra)
        .args(["token", "--sub", "me", "--scope", "send,read"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn wait_sent(client: &reqwest::Client, server: &Serve, token: &str, id: &str) -> Value {
    for _ in 0..200 {
        let message: Value = client
            .get(format!("{}/v1/messages/{id}", server.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if message["status"] == "sent" {
            return message;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("message {id} was not sent");
}

#[tokio::test]
async fn serve_in_an_empty_directory_delivers_to_the_outbox_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = serve(dir.path(), port, &[]).await;
    let data = dir.path().join("posthorn-data");
    let log = std::fs::read_to_string(dir.path().join(format!("serve-{port}.log"))).unwrap();
    assert!(
        log.contains("posthorn-data"),
        "the data directory is named at start: {log}"
    );
    assert!(
        log.contains("outbox") && log.contains("POSTHORN_SMTP_URL"),
        "the outbox is announced: {log}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("jwt-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let token = token(dir.path(), &[]);
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/send", server.address))
        .bearer_auth(&token)
        .json(&valid_message())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = wait_sent(&client, &server, &token, &id).await;
    assert_eq!(message["attempts"][0]["provider"], "outbox");
    let eml = std::fs::read_to_string(data.join("outbox").join(format!("{id}.eml")))
        .expect("the .eml file");
    assert!(eml.contains(message["message_id"].as_str().unwrap()));
    assert!(eml.contains("Subject: Your order"));

    // A restart keeps the messages, the secret and so the tokens.
    drop(server);
    let server = serve(dir.path(), free_port(), &[]).await;
    let again = wait_sent(&client, &server, &token, &id).await;
    assert_eq!(again["id"], id);
    assert_eq!(
        std::fs::read_dir(data.join("outbox")).unwrap().count(),
        2,
        "one .eml and its envelope"
    );
}

#[tokio::test]
async fn a_configured_secret_wins_over_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let secret = [(
        "POSTHORN_JWT_SECRET",
        "configured-secret-0123456789-0123456789",
    )];
    let server = serve(dir.path(), free_port(), &secret).await;
    assert!(
        !dir.path().join("posthorn-data/jwt-secret").exists(),
        "no secret is generated when one is configured"
    );
    let token = token(dir.path(), &secret);
    let response = reqwest::Client::new()
        .get(format!("{}/v1/messages", server.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_production_profile_sends_nothing_to_an_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("POSTHORN_PROFILE", "production"),
        (
            "POSTHORN_JWT_SECRET",
            "configured-secret-0123456789-0123456789",
        ),
    ];
    let server = serve(dir.path(), free_port(), &settings).await;
    let token = token(dir.path(), &settings);
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/send", server.address))
        .bearer_auth(&token)
        .json(&valid_message())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let message: Value = client
        .get(format!("{}/v1/messages/{id}", server.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(message["status"], "queued", "waits for an upstream");
    assert!(!dir.path().join("posthorn-data/outbox").exists());
}
