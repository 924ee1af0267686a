//! kill -9 at each point of a send.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{copies, token};
use crate::support::process::{self, Posthorn};
use crate::support::smtp::{Action, Script, SmtpServer};
use crate::support::{TestDatabase, valid_message};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillPoint {
    /// Connected, the greeting has not come.
    BeforeGreeting,
    /// DATA sent, its 354 has not come.
    DuringData,
    /// The final dot sent (the upstream has the message), its reply has not come.
    AfterFinalDot,
}

/// What a kill at one point left behind once the restarted process finished.
struct KillResult {
    copies: usize,
    possible_duplicates: f64,
    attempts: Vec<Value>,
}

async fn kill_during_send(point: KillPoint) -> KillResult {
    let database = TestDatabase::create().await;
    let script = match point {
        KillPoint::BeforeGreeting => Script {
            greeting: Action::Stall,
            ..Script::default()
        },
        KillPoint::DuringData => Script {
            data: Action::Stall,
            ..Script::default()
        },
        KillPoint::AfterFinalDot => Script {
            after_data: [Action::Stall].into(),
            ..Script::default()
        },
    };
    let smtp = SmtpServer::start_with(script).await;
    let mut env = process::delivering(&database, &smtp);
    env.push(("POSTHORN_WORKERS", "1".to_owned()));
    let mut server = Posthorn::spawn(&env);
    server.wait_ready().await;
    let token = token();
    let id = server.accept(&token, &valid_message()).await;

    // Kill the moment the send reaches the point: well inside the 1 s SMTP timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reached = match point {
            KillPoint::BeforeGreeting => smtp.connections() >= 1,
            KillPoint::DuringData => smtp.commands().iter().any(|c| c == "DATA"),
            KillPoint::AfterFinalDot => !smtp.received().is_empty(),
        };
        if reached {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the send never reached {point:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill9();
    let sending = database.sending(Some(&id)).await;
    assert_eq!(sending, 1, "killed mid-send: the job is still claimed");

    // The upstream recovers; a new process takes the job over when its lease expires.
    smtp.script(|script| {
        script.greeting = Action::reply("220 test.invalid ESMTP ready");
        script.data = Action::reply("354 go ahead");
        script.after_data.clear();
    });
    let mut server = Posthorn::spawn(&env);
    server.wait_ready().await;
    let message = server
        .wait_for_status(&token, &id, "sent", Duration::from_secs(20))
        .await;
    // A stray second copy would arrive right after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let message_id = message["message_id"].as_str().unwrap();
    let result = KillResult {
        copies: copies(&smtp, message_id),
        possible_duplicates: server.metric("posthorn_possible_duplicates_total").await,
        attempts: message["attempts"].as_array().unwrap().clone(),
    };
    eprintln!(
        "{point:?}: the upstream has {} cop{}; possible duplicates counted after the restart: {}; attempts: {:?}",
        result.copies,
        if result.copies == 1 { "y" } else { "ies" },
        result.possible_duplicates,
        result
            .attempts
            .iter()
            .map(|a| a["outcome"].as_str().unwrap_or("?").to_owned())
            .collect::<Vec<_>>()
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_before_the_greeting_delivers_once_after_the_restart() {
    let result = kill_during_send(KillPoint::BeforeGreeting).await;
    assert_eq!(result.copies, 1, "no duplicate: nothing was transferred");
    assert_eq!(result.attempts.last().unwrap()["outcome"], "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_data_delivers_once_after_the_restart() {
    let result = kill_during_send(KillPoint::DuringData).await;
    assert_eq!(
        result.copies, 1,
        "no duplicate: the upstream never had the data"
    );
    assert_eq!(result.attempts.last().unwrap()["outcome"], "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_the_final_dot_delivers_at_most_twice_and_counts_the_duplicate() {
    let result = kill_during_send(KillPoint::AfterFinalDot).await;
    assert!(
        (1..=2).contains(&result.copies),
        "at most twice: {}",
        result.copies
    );
    assert!(
        result.possible_duplicates >= 1.0,
        "the restarted process counts the possible duplicate: {}",
        result.possible_duplicates
    );
    assert_eq!(result.attempts.last().unwrap()["outcome"], "sent");
}
