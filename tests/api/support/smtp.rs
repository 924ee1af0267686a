//! A scriptable SMTP server for tests: it accepts, refuses at any stage, stalls, drops connections,
//! closes idle ones, and records every message exactly as it crossed the wire.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What the server does at one point of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer with this reply line (e.g. `250 OK`, `451 4.3.0 try later`).
    Reply(String),
    /// Never answer (the client must time out).
    Stall,
    /// Close the connection without answering.
    Drop,
}

impl Action {
    /// A reply line.
    pub fn reply(line: &str) -> Self {
        Action::Reply(line.to_owned())
    }
}

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// MAIL FROM argument (inside the angle brackets).
    pub from: String,
    /// RCPT TO addresses that were accepted.
    pub to: Vec<String>,
    /// The DATA bytes exactly as on the wire, dot-stuffed, up to (not including) the final `.\r\n`.
    pub raw: Vec<u8>,
    /// The MAIL FROM line's parameters (SMTPUTF8, BODY=8BITMIME ...).
    pub mail_parameters: String,
    /// The name the client gave in EHLO.
    pub helo: String,
}

impl Received {
    /// The message with dot-stuffing undone.
    pub fn data(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        text.split("\r\n")
            .map(|line| line.strip_prefix('.').unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    /// A header's value (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let data = self.data();
        let head = data.split("\r\n\r\n").next()?.to_owned();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.split("\r\n").find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// The server's behaviour, changeable while it runs.
#[derive(Debug, Clone)]
pub struct Script {
    /// The greeting, or stall/drop instead of greeting.
    pub greeting: Action,
    /// The reply to MAIL FROM.
    pub mail: Action,
    /// Replies to RCPT TO by address; others get `250 OK`.
    pub rcpt: HashMap<String, Action>,
    /// The reply to DATA.
    pub data: Action,
    /// Replies after the final dot, one per message, consumed in order; then `250 OK`.
    pub after_data: VecDeque<Action>,
    /// Delay before answering after the final dot.
    pub after_data_delay: Duration,
    /// Close a connection idle for this long.
    pub idle_close: Option<Duration>,
    /// Advertise SMTPUTF8.
    pub smtputf8: bool,
    /// Advertise PIPELINING.
    pub pipelining: bool,
    /// Answer DATA with `data` even when no recipient was accepted (RFC 2920 §3.1 says clients must
    /// cope); a strict server refuses it with 554.
    pub lenient_data: bool,
    /// Advertise `AUTH PLAIN LOGIN` and answer every AUTH command with this action; `None`: no AUTH.
    pub auth: Option<Action>,
}

impl Script {
    /// Everything accepted but `address`, refused at RCPT with `reply`.
    pub fn refusing(address: &str, reply: &str) -> Self {
        Self {
            rcpt: [(address.to_owned(), Action::reply(reply))].into(),
            ..Self::default()
        }
    }
}

impl Default for Script {
    fn default() -> Self {
        Self {
            greeting: Action::reply("220 test.invalid ESMTP ready"),
            mail: Action::reply("250 2.1.0 OK"),
            rcpt: HashMap::new(),
            data: Action::reply("354 go ahead"),
            after_data: VecDeque::new(),
            after_data_delay: Duration::ZERO,
            idle_close: None,
            smtputf8: true,
            pipelining: true,
            lenient_data: false,
            auth: None,
        }
    }
}

#[derive(Default)]
struct State {
    script: Script,
    received: Vec<Received>,
    open: usize,
    max_open: usize,
    connections: usize,
    commands: Vec<String>,
    auth_lines: Vec<String>,
    /// Per MAIL command: whether the commands after it had already arrived when it was read.
    mail_pipelined: Vec<bool>,
    /// Per final dot: whether more commands (the next message's envelope) came in the same write.
    chained: Vec<bool>,
}

/// A running test SMTP server.
#[derive(Clone)]
pub struct SmtpServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
}

impl SmtpServer {
    /// Starts a server that accepts everything.
    pub async fn start() -> Self {
        Self::start_with(Script::default()).await
    }

    /// Starts a server with a script.
    pub async fn start_with(script: Script) -> Self {
        Self::start_on(0, script).await
    }

    /// Starts a server with a script on this port of 127.0.0.1 (0: any free port).
    pub async fn start_on(port: u16, script: Script) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind SMTP server");
        let port = listener.local_addr().expect("address").port();
        let state = Arc::new(Mutex::new(State {
            script,
            ..State::default()
        }));
        let arrived = Arc::new(Notify::new());
        let server = Self {
            port,
            state,
            arrived,
        };
        let accept = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let session = accept.clone();
                tokio::spawn(async move {
                    {
                        let mut state = session.state.lock().unwrap();
                        state.open += 1;
                        state.connections += 1;
                        state.max_open = state.max_open.max(state.open);
                    }
                    let (read, write) = stream.into_split();
                    let _ = session.serve(BufReader::new(read), write).await;
                    session.state.lock().unwrap().open -= 1;
                });
            }
        });
        server
    }

    /// `smtp://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Changes the script.
    pub fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.state.lock().unwrap().script);
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The most connections that were open at once.
    pub fn max_open_connections(&self) -> usize {
        self.state.lock().unwrap().max_open
    }

    /// Connections accepted in total.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Per MAIL command: whether the commands after it had already arrived when it was read.
    pub fn mail_pipelined(&self) -> Vec<bool> {
        self.state.lock().unwrap().mail_pipelined.clone()
    }

    /// Per message (final dot), in order: whether the next message's commands had already arrived
    /// behind its data.
    pub fn chained(&self) -> Vec<bool> {
        self.state.lock().unwrap().chained.clone()
    }

    /// Every AUTH command line received (and the lines answering its challenges), as sent.
    pub fn auth_lines(&self) -> Vec<String> {
        self.state.lock().unwrap().auth_lines.clone()
    }

    /// Every command verb received, in order (`MAIL`, `RCPT`, `RSET`, `NOOP` ...).
    pub fn commands(&self) -> Vec<String> {
        self.state.lock().unwrap().commands.clone()
    }

    /// Waits until at least `count` messages arrived, or panics after `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("expected {count} messages, got {}", self.received().len());
            }
        }
    }

    async fn act<W: AsyncWrite + Unpin>(write: &mut W, action: &Action) -> std::io::Result<bool> {
        match action {
            Action::Reply(line) => {
                write.write_all(format!("{line}\r\n").as_bytes()).await?;
                Ok(true)
            }
            Action::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(false)
            }
            Action::Drop => Ok(false),
        }
    }

    async fn serve<R, W>(&self, mut read: BufReader<R>, mut write: W) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let greeting = self.state.lock().unwrap().script.greeting.clone();
        if !Self::act(&mut write, &greeting).await? {
            return Ok(());
        }
        let mut from = String::new();
        let mut helo = String::new();
        let mut parameters = String::new();
        let mut to = Vec::new();
        let mut in_transaction = false;
        let mut line = String::new();
        loop {
            line.clear();
            let idle = self.state.lock().unwrap().script.idle_close;
            let read_line = read.read_line(&mut line);
            let n = match idle {
                Some(idle) => match tokio::time::timeout(idle, read_line).await {
                    Ok(result) => result?,
                    Err(_) => {
                        let _ = write.write_all(b"421 4.4.2 idle timeout\r\n").await;
                        return Ok(());
                    }
                },
                None => read_line.await?,
            };
            if n == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_owned();
            let verb = command
                .split([' ', ':'])
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            self.state.lock().unwrap().commands.push(verb.clone());
            let script = self.state.lock().unwrap().script.clone();
            match verb.as_str() {
                "EHLO" | "HELO" => {
                    helo = command[4..].trim().to_owned();
                    let mut reply = String::from("250-test.invalid\r\n250-8BITMIME\r\n");
                    if script.pipelining {
                        reply.push_str("250-PIPELINING\r\n");
                    }
                    if script.smtputf8 {
                        reply.push_str("250-SMTPUTF8\r\n");
                    }
                    if script.auth.is_some() {
                        reply.push_str("250-AUTH PLAIN LOGIN\r\n");
                    }
                    reply.push_str("250 ENHANCEDSTATUSCODES\r\n");
                    write.write_all(reply.as_bytes()).await?;
                }
                "MAIL" => {
                    let behind = !read.buffer().is_empty();
                    self.state.lock().unwrap().mail_pipelined.push(behind);
                    in_transaction = false;
                    to.clear();
                    let rest = command[4..].trim_start();
                    let rest = rest
                        .strip_prefix("FROM:")
                        .or_else(|| rest.strip_prefix("from:"))
                        .unwrap_or(rest);
                    let (address, params) = split_path(rest);
                    if !Self::act(&mut write, &script.mail).await? {
                        return Ok(());
                    }
                    if matches!(&script.mail, Action::Reply(r) if r.starts_with('2')) {
                        from = address;
                        parameters = params;
                        in_transaction = true;
                    }
                }
                "RCPT" if !in_transaction => {
                    write.write_all(b"503 5.5.1 MAIL first\r\n").await?;
                }
                "DATA" if to.is_empty() && !script.lenient_data => {
                    write
                        .write_all(b"554 5.5.1 no valid recipients\r\n")
                        .await?;
                }
                "RCPT" => {
                    let rest = command[4..].trim_start();
                    let rest = rest
                        .strip_prefix("TO:")
                        .or_else(|| rest.strip_prefix("to:"))
                        .unwrap_or(rest);
                    let (address, _) = split_path(rest);
                    let action = script
                        .rcpt
                        .get(&address)
                        .cloned()
                        .unwrap_or_else(|| Action::reply("250 2.1.5 OK"));
                    if !Self::act(&mut write, &action).await? {
                        return Ok(());
                    }
                    if matches!(&action, Action::Reply(r) if r.starts_with('2')) {
                        to.push(address);
                    }
                }
                "DATA" => {
                    if !Self::act(&mut write, &script.data).await? {
                        return Ok(());
                    }
                    if !matches!(&script.data, Action::Reply(r) if r.starts_with('3')) {
                        continue;
                    }
                    let mut raw = Vec::new();
                    loop {
                        let mut buffer = Vec::new();
                        let n = read.read_until(b'\n', &mut buffer).await?;
                        if n == 0 {
                            return Ok(());
                        }
                        if buffer == b".\r\n" {
                            let behind = !read.buffer().is_empty();
                            self.state.lock().unwrap().chained.push(behind);
                            break;
                        }
                        raw.extend_from_slice(&buffer);
                    }
                    // The bytes before the terminating CRLF.CRLF end with the CRLF that is part of it.
                    if raw.ends_with(b"\r\n") {
                        raw.truncate(raw.len() - 2);
                    }
                    let action = {
                        let mut state = self.state.lock().unwrap();
                        state
                            .script
                            .after_data
                            .pop_front()
                            .unwrap_or_else(|| Action::reply("250 2.0.0 queued"))
                    };
                    let delay = script.after_data_delay;
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let accepted = matches!(&action, Action::Reply(r) if r.starts_with('2'));
                    let record = Received {
                        from: from.clone(),
                        to: to.clone(),
                        raw,
                        mail_parameters: parameters.clone(),
                        helo: helo.clone(),
                    };
                    // The server has the message once the dot arrived, whatever it answers or not;
                    // record accepted and unanswered ones (the duplicate window).
                    if accepted || !matches!(action, Action::Reply(_)) {
                        self.state.lock().unwrap().received.push(record);
                        self.arrived.notify_waiters();
                    }
                    in_transaction = false;
                    to.clear();
                    if !Self::act(&mut write, &action).await? {
                        return Ok(());
                    }
                }
                "AUTH" if script.auth.is_some() => {
                    self.state.lock().unwrap().auth_lines.push(command.clone());
                    let action = script.auth.clone().unwrap_or(Action::Drop);
                    // AUTH LOGIN without an initial response: ask for the user name and the password.
                    if command.eq_ignore_ascii_case("AUTH LOGIN") {
                        for challenge in ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"] {
                            write
                                .write_all(format!("{challenge}\r\n").as_bytes())
                                .await?;
                            line.clear();
                            if read.read_line(&mut line).await? == 0 {
                                return Ok(());
                            }
                            let answer = line.trim_end().to_owned();
                            self.state.lock().unwrap().auth_lines.push(answer);
                        }
                    }
                    if !Self::act(&mut write, &action).await? {
                        return Ok(());
                    }
                }
                "RSET" => {
                    to.clear();
                    in_transaction = false;
                    write.write_all(b"250 2.0.0 OK\r\n").await?;
                }
                "NOOP" => write.write_all(b"250 2.0.0 OK\r\n").await?,
                "QUIT" => {
                    write.write_all(b"221 2.0.0 bye\r\n").await?;
                    return Ok(());
                }
                _ => write.write_all(b"502 5.5.2 not implemented\r\n").await?,
            }
        }
    }
}

/// `<addr> PARAMS` → (addr, params).
fn split_path(rest: &str) -> (String, String) {
    let rest = rest.trim();
    match rest.strip_prefix('<').and_then(|r| r.split_once('>')) {
        Some((address, params)) => (address.to_owned(), params.trim().to_owned()),
        None => (rest.to_owned(), String::new()),
    }
}
