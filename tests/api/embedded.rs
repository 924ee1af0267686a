//! The first five minutes: `posthorn serve` in an empty directory, with no database server and no
//! configuration, accepts mail, writes it to the outbox, and keeps everything across a restart.

use std::path::Path;
use std::time::Duration;

use crate::support::process::{Posthorn, command};
use crate::support::valid_message;

/// `posthorn serve` in `dir`, with no `POSTHORN_*` variable but the listen address and `extra`, ready.
async fn serve(dir: &Path, extra: &[(&str, &str)]) -> Posthorn {
    let env: Vec<(&str, String)> = extra
        .iter()
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect();
    let mut server = Posthorn::spawn_in(dir, &env);
    server.wait_ready().await;
    server
}

fn token(dir: &Path, extra: &[(&str, &str)]) -> String {
    let output = command()
        .current_dir(dir)
        .envs(extra.iter().copied())
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

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn serve_in_an_empty_directory_delivers_to_the_outbox_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]).await;
    let data = dir.path().join("posthorn-data");
    let log = server.stderr();
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
    let id = server.accept(&token, &valid_message()).await;
    let message = server.wait_for_status(&token, &id, "sent", WAIT).await;
    assert_eq!(message["attempts"][0]["provider"], "outbox");
    let eml = std::fs::read_to_string(data.join("outbox").join(format!("{id}.eml")))
        .expect("the .eml file");
    assert!(eml.contains(message["message_id"].as_str().unwrap()));
    assert!(eml.contains("Subject: Your order"));

    // A restart keeps the messages, the secret and so the tokens.
    drop(server);
    let server = serve(dir.path(), &[]).await;
    let again = server.wait_for_status(&token, &id, "sent", WAIT).await;
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
    let server = serve(dir.path(), &secret).await;
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
    let server = serve(dir.path(), &settings).await;
    let token = token(dir.path(), &settings);
    let id = server.accept(&token, &valid_message()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let message = server.message(&token, &id).await;
    assert_eq!(message["status"], "queued", "waits for an upstream");
    assert!(!dir.path().join("posthorn-data/outbox").exists());
}
