//! The console in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven with Selenium by `support/console_browser.py`) signs in, finds a message, opens it and
//! cancels it. A screenshot of each page is kept in `target/artifacts/console/`. Once, on PostgreSQL.

use std::path::Path;
use std::process::Command;

use posthorn::auth::Scope;
use serde_json::{Value, json};

use crate::support::{spawn_app, valid_message};

#[tokio::test]
async fn a_browser_signs_in_finds_a_message_opens_it_and_cancels_it() {
    crate::postgres_only!();
    let app = spawn_app().await;
    let mut message = valid_message();
    message["to"] = json!(["browser-test@example.org"]);
    message["subject"] = json!("Seen in Chromium");
    message["html"] = json!("<h1>Hello from the preview</h1><script>document.title='ran'</script>");
    let id = app.accept(&message).await;
    app.accept(&valid_message()).await;
    let token = app.token("ops", &[Scope::Admin]);
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts/console");
    let _ = std::fs::remove_dir_all(&artifacts);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/support/console_browser.py");
    let python = std::env::var("POSTHORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let address = app.address.clone();
    let artifacts_arg = artifacts.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([
                address.as_str(),
                token.as_str(),
                "browser-test@example.org",
                "Seen in Chromium",
            ])
            .arg(&artifacts_arg)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!("console_browser.py did not report (./scripts/test.sh installs chromium, chromium-driver and selenium):\n{stdout}\n{stderr}")
    });
    assert!(output.status.success(), "{seen}\n{stderr}");
    assert_eq!(seen["redirected_to_login"], true, "{seen}");
    assert_eq!(seen["token_in_url"], false);
    assert_eq!(seen["token_in_page"], false);
    assert_eq!(seen["cookie_http_only"], true);
    assert_eq!(seen["cookie_visible_to_script"], false);
    assert_eq!(seen["rows_after_filter"], 1, "{seen}");
    assert_eq!(seen["detail_shows_recipient"], true);
    assert_eq!(seen["preview_sandboxed"], true);
    assert!(
        seen["preview_text"]
            .as_str()
            .unwrap()
            .contains("Hello from the preview"),
        "{seen}"
    );
    assert!(
        seen["notice"].as_str().unwrap().contains("cancelled"),
        "{seen}"
    );
    assert_eq!(seen["status_after"], "cancelled");
    assert_eq!(
        seen["console_errors"],
        json!([]),
        "no CSP violation or script error: {seen}"
    );
    assert_eq!(app.message(&id).await["status"], "cancelled");
    for shot in [
        "1-login",
        "2-messages",
        "3-filtered",
        "4-message",
        "5-cancelled",
        "6-queue",
    ] {
        let png = std::fs::read(artifacts.join(format!("{shot}.png"))).expect("screenshot kept");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 1000, "{shot}");
    }
}
