//! A load generator: tasks posting messages continuously, every answer recorded with its timing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::valid_message;

/// One request of the load: when it started (since the load began), how long it took, and its answer.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: Duration,
    pub took: Duration,
    pub status: u16,
    pub retry_after: Option<String>,
    pub problem: Option<String>,
    pub id: Option<String>,
}

/// Posts messages continuously from `tasks` tasks until stopped.
pub struct Load {
    stop: CancellationToken,
    sent: Arc<Mutex<Vec<Sent>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub began: Instant,
}

impl Load {
    pub fn start(address: &str, token: &str, tasks: usize, pause: Duration) -> Self {
        let stop = CancellationToken::new();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let began = Instant::now();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("client");
        let tasks = (0..tasks)
            .map(|task| {
                let stop = stop.clone();
                let sent = sent.clone();
                let http = http.clone();
                let url = format!("{address}/send");
                let token = token.to_owned();
                tokio::spawn(async move {
                    let mut index = 0;
                    while !stop.is_cancelled() {
                        let mut body = valid_message();
                        body["subject"] = json!(format!("load {task}-{index}"));
                        index += 1;
                        let at = began.elapsed();
                        let started = Instant::now();
                        let outcome = http.post(&url).bearer_auth(&token).json(&body).send().await;
                        let took = started.elapsed();
                        let record = match outcome {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let retry_after = response
                                    .headers()
                                    .get("retry-after")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                let body: Value = response.json().await.unwrap_or(Value::Null);
                                Sent {
                                    at,
                                    took,
                                    status,
                                    retry_after,
                                    problem: body["type"].as_str().map(str::to_owned),
                                    id: body["id"].as_str().map(str::to_owned),
                                }
                            }
                            // A transport error (or the client's own 15 s timeout) is recorded as 0.
                            Err(_) => Sent {
                                at,
                                took,
                                status: 0,
                                retry_after: None,
                                problem: None,
                                id: None,
                            },
                        };
                        sent.lock().unwrap().push(record);
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            tasks,
            began,
        }
    }

    pub async fn finish(self) -> Vec<Sent> {
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("load task");
        }
        let mut sent = self.sent.lock().unwrap().clone();
        sent.sort_by_key(|s| s.at);
        sent
    }
}
