//! A small SMTP server for the mail tests: it speaks enough of RFC 5321 for a real client
//! (greeting, EHLO/HELO, MAIL FROM, RCPT TO, DATA with dot-unstuffing, RSET, NOOP, QUIT) over
//! plain TCP on 127.0.0.1, keeps every message it accepts, and can refuse chosen recipients with
//! a permanent error. [`Mail`] reads a received message back: headers, the plain-text and HTML
//! parts (quoted-printable and base64 decoded) and the links in them.
//!
//! It can be stopped and started again on the same port, which is how the tests take "the SMTP
//! server" down and bring it back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// One accepted message, with its envelope.
#[derive(Debug, Clone)]
pub struct Received {
    pub helo: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The DATA as sent, CRLF line ends, dots unstuffed.
    pub data: String,
    pub at: Instant,
}

impl Received {
    pub fn mail(&self) -> Mail {
        Mail::parse(&self.data)
    }
}

/// One RCPT TO the catcher answered.
#[derive(Debug, Clone)]
pub struct RcptAttempt {
    pub address: String,
    pub accepted: bool,
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    messages: Mutex<Vec<Received>>,
    rcpts: Mutex<Vec<RcptAttempt>>,
    /// (substring of the address, full reply line) for recipients to refuse.
    refuse: Mutex<Vec<(String, String)>>,
    connections: Mutex<u64>,
}

/// The server. Stopped (port closed, open sessions cut) when dropped.
pub struct SmtpCatcher {
    pub port: u16,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl SmtpCatcher {
    /// Start on a free port.
    pub async fn start() -> SmtpCatcher {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind :0");
        Self::serve(listener, Arc::default())
    }

    /// Start on `port` (e.g. one the service under test was already told about), waiting up to
    /// 10 s for it to become free.
    pub async fn start_on(port: u16) -> SmtpCatcher {
        Self::restart(port, Arc::default()).await
    }

    async fn restart(port: u16, shared: Arc<Shared>) -> SmtpCatcher {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let socket = TcpSocket::new_v4().expect("socket");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            match socket
                .bind(([127, 0, 0, 1], port).into())
                .and_then(|()| socket.listen(64))
            {
                Ok(l) => return Self::serve(l, shared),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("SMTP catcher cannot bind port {port}: {e}"),
            }
        }
    }

    fn serve(listener: TcpListener, shared: Arc<Shared>) -> SmtpCatcher {
        let port = listener.local_addr().expect("addr").port();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (sh, ts) = (shared.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                *sh.connections.lock().unwrap() += 1;
                let session = tokio::spawn(session(stream, sh.clone()));
                ts.lock().unwrap().push(session);
            }
        });
        tasks.lock().unwrap().push(accept);
        SmtpCatcher {
            port,
            shared,
            tasks,
        }
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Close the port and cut every open session. Received messages are kept.
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Stop, then listen again on the same port with the same store.
    pub async fn stop_and_start(self) -> SmtpCatcher {
        self.stop();
        let (port, shared) = (self.port, self.shared.clone());
        drop(self);
        Self::restart(port, shared).await
    }

    /// Refuse RCPT TO for addresses containing `pattern` with `reply` (a full reply line such
    /// as `550 5.1.1 no such user`).
    pub fn refuse(&self, pattern: &str, reply: &str) {
        self.shared
            .refuse
            .lock()
            .unwrap()
            .push((pattern.to_ascii_lowercase(), reply.to_string()));
    }

    pub fn messages(&self) -> Vec<Received> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// Messages whose envelope names `to`.
    pub fn messages_to(&self, to: &str) -> Vec<Received> {
        self.messages()
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(to)))
            .collect()
    }

    pub fn rcpt_attempts(&self, address: &str) -> Vec<RcptAttempt> {
        self.shared
            .rcpts
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.address.eq_ignore_ascii_case(address))
            .cloned()
            .collect()
    }

    pub fn connections(&self) -> u64 {
        *self.shared.connections.lock().unwrap()
    }

    /// Wait until at least `n` messages have arrived; panics after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "SMTP catcher: {} message(s) after {within:?}, expected {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpCatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Strip `<…>` and any ESMTP parameters from a MAIL FROM / RCPT TO argument.
fn path_arg(rest: &str) -> String {
    let rest = rest.trim();
    match (rest.find('<'), rest.find('>')) {
        (Some(a), Some(b)) if a < b => rest[a + 1..b].to_string(),
        _ => rest.split_whitespace().next().unwrap_or("").to_string(),
    }
}

async fn session(stream: TcpStream, shared: Arc<Shared>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    macro_rules! reply {
        ($($t:tt)*) => {
            if w.write_all(format!($($t)*).as_bytes()).await.is_err() { return; }
        };
    }
    reply!("220 catcher.test ESMTP stellar test catcher\r\n");
    let (mut helo, mut from, mut rcpts) = (String::new(), None::<String>, Vec::<String>::new());
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let cmd = line.trim_end_matches(['\r', '\n']);
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO ") || upper == "EHLO" {
            helo = cmd.get(5..).unwrap_or("").trim().to_string();
            reply!("250-catcher.test greets {helo}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760\r\n");
        } else if upper.starts_with("HELO") {
            helo = cmd.get(5..).unwrap_or("").trim().to_string();
            reply!("250 catcher.test\r\n");
        } else if upper.starts_with("MAIL FROM:") {
            from = Some(path_arg(&cmd["MAIL FROM:".len()..]));
            rcpts.clear();
            reply!("250 2.1.0 Ok\r\n");
        } else if upper.starts_with("RCPT TO:") {
            if from.is_none() {
                reply!("503 5.5.1 MAIL first\r\n");
                continue;
            }
            let addr = path_arg(&cmd["RCPT TO:".len()..]);
            let refusal = shared
                .refuse
                .lock()
                .unwrap()
                .iter()
                .find(|(p, _)| addr.to_ascii_lowercase().contains(p.as_str()))
                .map(|(_, reply)| reply.clone());
            shared.rcpts.lock().unwrap().push(RcptAttempt {
                address: addr.clone(),
                accepted: refusal.is_none(),
                at: Instant::now(),
            });
            match refusal {
                Some(r) => reply!("{r}\r\n"),
                None => {
                    rcpts.push(addr);
                    reply!("250 2.1.5 Ok\r\n");
                }
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                reply!("503 5.5.1 RCPT first\r\n");
                continue;
            }
            reply!("354 End data with <CR><LF>.<CR><LF>\r\n");
            let mut data = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let l = line.trim_end_matches(['\r', '\n']);
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(l));
                data.push_str("\r\n");
            }
            let n = {
                let mut m = shared.messages.lock().unwrap();
                m.push(Received {
                    helo: helo.clone(),
                    mail_from: from.take().unwrap_or_default(),
                    rcpt_to: std::mem::take(&mut rcpts),
                    data,
                    at: Instant::now(),
                });
                m.len()
            };
            reply!("250 2.0.0 Ok: queued as {n}\r\n");
        } else if upper == "RSET" {
            from = None;
            rcpts.clear();
            reply!("250 2.0.0 Ok\r\n");
        } else if upper.starts_with("NOOP") {
            reply!("250 2.0.0 Ok\r\n");
        } else if upper == "QUIT" {
            reply!("221 2.0.0 Bye\r\n");
            return;
        } else {
            reply!("502 5.5.2 Command not recognized\r\n");
        }
    }
}

/// A parsed RFC 5322 message (what the tests need of MIME).
#[derive(Debug, Clone)]
pub struct Mail {
    /// Unfolded header fields in order.
    pub headers: Vec<(String, String)>,
    /// The body of a single-part message (decoded), or empty for multipart.
    pub body: String,
    /// For multipart messages: (content type, decoded body) of each part.
    pub parts: Vec<(String, String)>,
}

impl Mail {
    pub fn parse(raw: &str) -> Mail {
        let (headers, body) = split_head(raw);
        let ctype = get(&headers, "content-type").unwrap_or_default();
        if ctype.to_ascii_lowercase().starts_with("multipart/") {
            let boundary = param(&ctype, "boundary").expect("multipart without boundary");
            let delim = format!("--{boundary}");
            let mut parts = Vec::new();
            for chunk in body.split(&delim).skip(1) {
                if chunk.starts_with("--") {
                    break;
                }
                let chunk = chunk.strip_prefix("\r\n").unwrap_or(chunk);
                let (ph, pb) = split_head(chunk);
                let pt = get(&ph, "content-type").unwrap_or_else(|| "text/plain".into());
                let cte = get(&ph, "content-transfer-encoding").unwrap_or_default();
                let pb = pb.strip_suffix("\r\n").unwrap_or(&pb).to_string();
                parts.push((pt, decode(&pb, &cte)));
            }
            Mail {
                headers,
                body: String::new(),
                parts,
            }
        } else {
            let cte = get(&headers, "content-transfer-encoding").unwrap_or_default();
            Mail {
                body: decode(&body, &cte),
                headers,
                parts: Vec::new(),
            }
        }
    }

    /// The first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        get(&self.headers, name)
    }

    fn part(&self, mime: &str) -> Option<String> {
        self.parts
            .iter()
            .find(|(t, _)| t.to_ascii_lowercase().starts_with(mime))
            .map(|(_, b)| b.clone())
    }

    pub fn text(&self) -> Option<String> {
        self.part("text/plain").or_else(|| {
            let single = self.header("content-type").unwrap_or_default();
            (self.parts.is_empty() && single.to_ascii_lowercase().starts_with("text/plain"))
                .then(|| self.body.clone())
        })
    }

    pub fn html(&self) -> Option<String> {
        self.part("text/html")
    }

    /// The http(s) links of the plain-text part, in order.
    pub fn links(&self) -> Vec<String> {
        links_in(&self.text().unwrap_or_default())
    }
}

/// Every `http://` or `https://` URL in `s`, up to whitespace, a quote or an angle bracket.
pub fn links_in(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = [rest.find("http://"), rest.find("https://")]
        .into_iter()
        .flatten()
        .min()
    {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c.is_whitespace() || "\"'<>".contains(c))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn split_head(raw: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .map_or((raw, ""), |(h, b)| (h, b));
    let mut headers: Vec<(String, String)> = Vec::new();
    for l in head.split("\r\n") {
        if l.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(l.trim());
            }
        } else if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (headers, body.to_string())
}

fn get(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn decode(body: &str, cte: &str) -> String {
    match cte.trim().to_ascii_lowercase().as_str() {
        "quoted-printable" => decode_qp(body),
        "base64" => {
            use base64::Engine;
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .expect("base64 part");
            String::from_utf8(bytes).expect("utf-8 part")
        }
        _ => body.to_string(),
    }
}

fn decode_qp(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).expect("utf-8 part")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multipart_with_qp_and_base64() {
        let raw = "From: a@example.com\r\nSubject: hi\r\n there\r\nContent-Type: multipart/alternative;\r\n boundary=\"XYZ\"\r\n\r\n\
                   --XYZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                   Open https://x.example/a?t=3D1 now=\r\n ok\r\n\
                   --XYZ\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+aGk8L2I+\r\n--XYZ--\r\n";
        let m = Mail::parse(raw);
        assert_eq!(m.header("subject").as_deref(), Some("hi there"));
        assert_eq!(
            m.text().as_deref(),
            Some("Open https://x.example/a?t=1 now ok")
        );
        assert_eq!(m.html().as_deref(), Some("<b>hi</b>"));
        assert_eq!(m.links(), ["https://x.example/a?t=1"]);
        assert_eq!(
            links_in("see <a href=\"http://h/x\">http://h/y</a> and https://z"),
            ["http://h/x", "http://h/y", "https://z"]
        );
    }
}
