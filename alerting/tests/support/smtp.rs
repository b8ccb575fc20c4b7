//! A real SMTP server for tests: aiosmtpd (`pip install aiosmtpd`) on a
//! random loopback port, storing what it receives in a Maildir of its own.
//! Killed on drop. `$PYTHON` picks the interpreter (default `python3`).
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use testkit::{Process, TempDir};

/// Fields drop in order: the server is killed, then its Maildir removed.
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    child: Process,
    dir: TempDir,
}

impl SmtpServer {
    /// Starts aiosmtpd and returns once it answers with its 220 greeting.
    pub fn start() -> Self {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let mut last_error = String::new();
        // Another process may take the port between the probe and aiosmtpd's
        // bind; then the child exits and another port is tried.
        for _ in 0..5 {
            let port = free_port();
            let dir = TempDir::new("alerting-smtp");
            let maildir = dir.join("Maildir");
            let log = std::fs::File::create(dir.join("aiosmtpd.log")).expect("create aiosmtpd log");
            let child = Command::new(&python)
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
            let mut server = SmtpServer { host: "127.0.0.1".into(), port, child: Process(child), dir };
            match server.wait_ready(Duration::from_secs(15)) {
                Ok(()) => return server,
                Err(e) => {
                    let log = std::fs::read_to_string(server.dir.join("aiosmtpd.log")).unwrap_or_default();
                    last_error = format!("{e}\n{log}");
                }
            }
        }
        panic!("aiosmtpd did not start (is it installed? `{python} -m pip install aiosmtpd`): {last_error}");
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.0.try_wait() {
                return Err(format!("aiosmtpd exited with {status}"));
            }
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut greeting = String::new();
                let mut reader = BufReader::new(&stream);
                if reader.read_line(&mut greeting).is_ok() && greeting.starts_with("220") {
                    let _ = (&stream).write_all(b"QUIT\r\n");
                    // Our child must still be the one listening.
                    if matches!(self.child.0.try_wait(), Ok(None)) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no SMTP greeting on port {} after {timeout:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Raw messages as stored (aiosmtpd adds `X-MailFrom`, `X-RcptTo` and
    /// `X-Peer` headers), oldest first by file name.
    pub fn messages(&self) -> Vec<String> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.dir.join("Maildir").join(sub)) {
                files.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        }
        files.sort();
        files.iter().filter_map(|f| std::fs::read(f).ok()).map(|b| String::from_utf8_lossy(&b).into_owned()).collect()
    }

    /// Polls the Maildir (it has no change notification) until `n` messages
    /// arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("SMTP server: {} of {n} messages after {timeout:?}", messages.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

use testkit::free_port;

/// One leaf MIME part: its content type and its decoded body.
#[derive(Debug, Clone)]
pub struct Part {
    pub content_type: String,
    pub body: String,
}

/// Every leaf part of a raw message, bodies decoded from quoted-printable or
/// base64, so tests can look for substrings.
pub fn parts(raw: &str) -> Vec<Part> {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    let headers = unfold(head);
    let content_type = header(&headers, "content-type").unwrap_or_else(|| "text/plain".into());
    if content_type.to_ascii_lowercase().starts_with("multipart/") {
        let Some(boundary) = param(&content_type, "boundary") else {
            return Vec::new();
        };
        let delimiter = format!("--{boundary}");
        let mut out = Vec::new();
        // Skip the preamble; stop at the closing delimiter.
        for chunk in body.split(&delimiter).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            out.extend(parts(chunk.strip_prefix('\n').unwrap_or(chunk)));
        }
        return out;
    }
    let encoding = header(&headers, "content-transfer-encoding").unwrap_or_default().to_ascii_lowercase();
    let bytes = match encoding.trim() {
        "quoted-printable" => decode_qp(body),
        "base64" => decode_base64(body),
        _ => body.as_bytes().to_vec(),
    };
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    vec![Part { content_type: media, body: String::from_utf8_lossy(&bytes).into_owned() }]
}

/// All decoded bodies, joined.
pub fn bodies(raw: &str) -> String {
    parts(raw).into_iter().map(|p| p.body).collect::<Vec<_>>().join("\n")
}

/// A header value (first occurrence), or `None`.
pub fn header_value(raw: &str, name: &str) -> Option<String> {
    let raw = raw.replace("\r\n", "\n");
    let head = raw.split_once("\n\n").map_or(raw.as_str(), |(h, _)| h);
    header(&unfold(head), name)
}

fn unfold(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    headers
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
}

fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_string())
    })
}

fn decode_qp(body: &str) -> Vec<u8> {
    let body = body.replace("=\n", "");
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn decode_base64(body: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue, // padding and line breaks
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
