//! HTTP/1.1 message framing for the proxy core (RFC 9112): a request or response head is parsed
//! in place with `httparse` (the parser pingora itself uses) into byte ranges of the received
//! head, the fields the gateway acts on are picked out in the same pass, and the body's framing is
//! decided (§6.3). Bodies are forwarded as received; a chunked body is walked, not rewritten, to
//! find where the message ends (or de-chunked for an HTTP/1.0 client).
//!
//! Nothing here allocates per message once a connection's buffers have grown: heads are copied
//! into reusable buffers, fields are ranges into them.

use std::ops::Range;

/// A head larger than this is refused (431 for a request, 502 for a response).
pub const MAX_HEAD: usize = 64 * 1024;
/// Fields per head.
pub const MAX_FIELDS: usize = 128;
/// A chunk-size line (with extensions) or trailer line longer than this is refused.
const MAX_LINE: usize = 4096;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Body {
    #[default]
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// Why a head or body could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The head is larger than [`MAX_HEAD`] or has more than [`MAX_FIELDS`] fields.
    TooLarge,
    /// Malformed (the reason is for logs).
    Malformed(&'static str),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::TooLarge => f.write_str("head too large"),
            Invalid::Malformed(why) => f.write_str(why),
        }
    }
}

/// One field: name and value as ranges of the head.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

impl Field {
    pub fn name<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[self.name.0 as usize..self.name.1 as usize]
    }
    pub fn value<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[self.value.0 as usize..self.value.1 as usize]
    }
}

/// Field names the gateway acts on, recognised once while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    XApiKey,
    Authorization,
    XStellarAgent,
    /// Any other `X-Stellar-*`: never forwarded.
    XStellarOther,
    XRequestId,
    XForwardedFor,
    /// A rate-limit field the gateway sets on its answers.
    RateLimitField,
    Other,
}

impl Name {
    pub fn of(name: &[u8]) -> Name {
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        match name.len() {
            2 if is("te") => Name::Te,
            6 if is("expect") => Name::Expect,
            7 if is("trailer") => Name::Trailer,
            7 if is("upgrade") => Name::Upgrade,
            9 if is("x-api-key") => Name::XApiKey,
            9 if is("ratelimit") => Name::RateLimitField,
            10 if is("connection") => Name::Connection,
            10 if is("keep-alive") => Name::KeepAlive,
            11 if is("retry-after") => Name::RateLimitField,
            12 if is("x-request-id") => Name::XRequestId,
            13 if is("authorization") => Name::Authorization,
            14 if is("content-length") => Name::ContentLength,
            15 if is("x-stellar-agent") => Name::XStellarAgent,
            15 if is("x-forwarded-for") => Name::XForwardedFor,
            16 if is("proxy-connection") => Name::ProxyConnection,
            16 if is("ratelimit-policy") => Name::RateLimitField,
            17 if is("transfer-encoding") => Name::TransferEncoding,
            17 if is("x-ratelimit-limit") => Name::RateLimitField,
            17 if is("x-ratelimit-reset") => Name::RateLimitField,
            21 if is("x-ratelimit-remaining") => Name::RateLimitField,
            n if n > 10 && name[..10].eq_ignore_ascii_case(b"x-stellar-") => Name::XStellarOther,
            _ => Name::Other,
        }
    }

    /// Hop-by-hop (RFC 9110 §7.6.1, plus the legacy `Proxy-Connection`): never forwarded.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Name::Connection
                | Name::KeepAlive
                | Name::ProxyConnection
                | Name::Te
                | Name::Trailer
                | Name::Upgrade
        )
    }
}

/// What the head's `Connection` fields say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionOpts {
    pub close: bool,
    pub keep_alive: bool,
    /// Some other field is named, to be dropped on forwarding.
    pub names_fields: bool,
}

/// A parsed head: the bytes (owned by the caller's buffer) and what was found in them.
#[derive(Debug, Default)]
pub struct Head {
    /// `[start, end)` of the method (request) or reason phrase (response).
    word: (u32, u32),
    /// The request target.
    target: (u32, u32),
    pub status: u16,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor: u8,
    pub fields: Vec<(Name, Field)>,
    pub conn: ConnectionOpts,
    pub body: Body,
    pub expect_continue: bool,
}

fn range(base: &[u8], part: &[u8]) -> (u32, u32) {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start as u32, (start + part.len()) as u32)
}

fn slice(head: &[u8], r: (u32, u32)) -> &[u8] {
    &head[r.0 as usize..r.1 as usize]
}

impl Head {
    pub fn method<'h>(&self, head: &'h [u8]) -> &'h str {
        // httparse only accepts token characters in a method.
        std::str::from_utf8(slice(head, self.word)).unwrap_or("")
    }

    pub fn reason<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        slice(head, self.word)
    }

    pub fn target<'h>(&self, head: &'h [u8]) -> &'h str {
        // httparse only accepts visible ASCII in a target.
        std::str::from_utf8(slice(head, self.target)).unwrap_or("")
    }

    /// The path of the target, without the query (absolute-form is reduced to its path).
    pub fn path<'h>(&self, head: &'h [u8]) -> std::borrow::Cow<'h, str> {
        let t = self.target(head);
        if t.starts_with('/') {
            return t.split('?').next().unwrap_or(t).into();
        }
        match t.parse::<http::Uri>() {
            Ok(u) if u.scheme().is_some() => u.path().to_string().into(),
            _ => t.into(),
        }
    }

    /// The first field of this kind.
    pub fn get<'h>(&self, head: &'h [u8], name: Name) -> Option<&'h [u8]> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f.value(head))
    }

    pub fn get_str<'h>(&self, head: &'h [u8], name: Name) -> Option<&'h str> {
        self.get(head, name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether `Connection` names this field (compared case-insensitively).
    pub fn connection_names(&self, head: &[u8], field: &[u8]) -> bool {
        self.conn.names_fields
            && self
                .fields
                .iter()
                .filter(|(n, _)| *n == Name::Connection)
                .any(|(_, f)| tokens(f.value(head)).any(|t| t.eq_ignore_ascii_case(field)))
    }
}

/// The comma-separated tokens of a field value, trimmed, empty ones skipped.
pub fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// The length of a head from httparse's answer on a buffer of `buffered` bytes: `None` while
/// incomplete (and within [`MAX_HEAD`]).
fn head_len(
    parsed: httparse::Result<usize>,
    buffered: usize,
    malformed: &'static str,
) -> Result<Option<usize>, Invalid> {
    match parsed {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => Err(Invalid::TooLarge),
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buffered > MAX_HEAD => Err(Invalid::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Invalid::TooLarge),
        Err(_) => Err(Invalid::Malformed(malformed)),
    }
}

/// Parse a request head at the start of `buf`. `Ok(None)`: incomplete. On success, returns the
/// head's length; `head` describes `buf[..len]`.
pub fn parse_request(buf: &[u8], head: &mut Head) -> Result<Option<usize>, Invalid> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut raw);
    let Some(len) = head_len(req.parse(buf), buf.len(), "malformed request head")? else {
        return Ok(None);
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Invalid::Malformed("malformed request line"));
    };
    head.word = range(buf, method.as_bytes());
    head.target = range(buf, target.as_bytes());
    head.minor = minor;
    head.status = 0;
    fill_fields(buf, req.headers, head);
    head.expect_continue = head
        .get(buf, Name::Expect)
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
    head.body = match (framing(buf, head)?, head.minor) {
        // RFC 9112 §6.1: TE in an HTTP/1.0 message is faulty framing; §6.3: a request whose
        // final coding is not chunked cannot be delimited. Both TE and Content-Length is the
        // shape of request smuggling: refused rather than guessed.
        (
            Framing {
                te: Some(_),
                cl: Some(_),
            },
            _,
        ) => {
            return Err(Invalid::Malformed(
                "both Transfer-Encoding and Content-Length",
            ))
        }
        (Framing { te: Some(_), .. }, 0) => {
            return Err(Invalid::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ))
        }
        (Framing { te: Some(true), .. }, _) => Body::Chunked,
        (
            Framing {
                te: Some(false), ..
            },
            _,
        ) => return Err(Invalid::Malformed("request body not chunked-encoded")),
        (Framing { cl: Some(0), .. }, _) | (Framing { cl: None, .. }, _) => Body::None,
        (Framing { cl: Some(n), .. }, _) => Body::Length(n),
    };
    Ok(Some(len))
}

/// Parse a response head at the start of `buf`, for a request with `method`.
pub fn parse_response(
    buf: &[u8],
    head: &mut Head,
    method_is_head: bool,
) -> Result<Option<usize>, Invalid> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut raw);
    let Some(len) = head_len(resp.parse(buf), buf.len(), "malformed response head")? else {
        return Ok(None);
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(Invalid::Malformed("malformed status line"));
    };
    // An absent or empty reason is httparse's static "", not a slice of `buf`.
    head.word = match resp.reason {
        Some(r) if !r.is_empty() => range(buf, r.as_bytes()),
        _ => (0, 0),
    };
    head.target = (0, 0);
    head.status = status;
    head.minor = minor;
    fill_fields(buf, resp.headers, head);
    head.expect_continue = false;
    let f = framing(buf, head)?;
    head.body = if method_is_head || (100..200).contains(&status) || status == 204 || status == 304
    {
        Body::None
    } else {
        match f {
            Framing { te: Some(true), .. } if minor == 1 => Body::Chunked,
            Framing { te: Some(_), .. } => Body::Close,
            Framing { cl: Some(0), .. } => Body::None,
            Framing { cl: Some(n), .. } => Body::Length(n),
            Framing { cl: None, .. } => Body::Close,
        }
    };
    Ok(Some(len))
}

fn fill_fields(buf: &[u8], raw: &[httparse::Header<'_>], head: &mut Head) {
    head.fields.clear();
    head.conn = ConnectionOpts::default();
    for h in raw {
        let name = Name::of(h.name.as_bytes());
        if name == Name::Connection {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    head.conn.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    head.conn.keep_alive = true;
                } else {
                    head.conn.names_fields = true;
                }
            }
        }
        head.fields.push((
            name,
            Field {
                name: range(buf, h.name.as_bytes()),
                value: range(buf, h.value),
            },
        ));
    }
}

struct Framing {
    /// `Some(chunked is the final coding)` when Transfer-Encoding is present.
    te: Option<bool>,
    /// The Content-Length, all copies agreeing.
    cl: Option<u64>,
}

fn framing(buf: &[u8], head: &Head) -> Result<Framing, Invalid> {
    let mut te: Option<bool> = None;
    let mut cl: Option<u64> = None;
    for (name, f) in &head.fields {
        match name {
            Name::TransferEncoding => {
                // The last coding of the last field decides; an empty field is ignored.
                if let Some(last) = tokens(f.value(buf)).last() {
                    te = Some(last.eq_ignore_ascii_case(b"chunked"));
                }
            }
            Name::ContentLength => {
                // `Content-Length = 1*DIGIT`: a field without a number is as bad as a wrong one.
                if tokens(f.value(buf)).next().is_none() {
                    return Err(Invalid::Malformed("bad Content-Length"));
                }
                for v in tokens(f.value(buf)) {
                    let n = parse_length(v).ok_or(Invalid::Malformed("bad Content-Length"))?;
                    if cl.is_some_and(|c| c != n) {
                        return Err(Invalid::Malformed("conflicting Content-Length"));
                    }
                    cl = Some(n);
                }
            }
            _ => {}
        }
    }
    Ok(Framing { te, cl })
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Walks a chunked body as it arrives, to find where it ends, count its data and (for an
/// HTTP/1.0 recipient) pick out the data.
#[derive(Debug, Clone, Default)]
pub struct Chunked {
    state: ChunkState,
    /// Data bytes seen so far.
    pub data: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailer,
    Done,
}

impl Chunked {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Walk `buf` (the bytes not yet walked). Returns how many of them belong to the body: fewer
    /// than `buf.len()` when the body ends inside it, or when it ends in an incomplete size or
    /// trailer line (those bytes must be offered again with more after them). `data` gets the
    /// range of every data segment.
    pub fn walk(
        &mut self,
        buf: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<usize, Invalid> {
        let mut at = 0;
        while at < buf.len() {
            match self.state {
                // `chunk-size = 1*HEXDIG` (httparse reads a line without digits as 0).
                ChunkState::Size if !buf[at].is_ascii_hexdigit() => {
                    return Err(Invalid::Malformed("bad chunk size"))
                }
                ChunkState::Size => match httparse::parse_chunk_size(&buf[at..]) {
                    Ok(httparse::Status::Complete((used, _))) if used > MAX_LINE + 2 => {
                        return Err(Invalid::Malformed("chunk size line too long"))
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        at += used;
                        self.state = if size == 0 {
                            ChunkState::Trailer
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        // (A pending CR does not count.)
                        if buf.len() - at > MAX_LINE + 1 {
                            return Err(Invalid::Malformed("chunk size line too long"));
                        }
                        return Ok(at);
                    }
                    Err(_) => return Err(Invalid::Malformed("bad chunk size")),
                },
                ChunkState::Data(left) => {
                    let n = left.min((buf.len() - at) as u64) as usize;
                    data(at..at + n);
                    at += n;
                    self.data += n as u64;
                    self.state = if left == n as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                }
                ChunkState::DataEnd => {
                    if buf.len() - at < 2 {
                        if buf[at] != b'\r' {
                            return Err(Invalid::Malformed("chunk data not followed by CRLF"));
                        }
                        return Ok(at);
                    }
                    if &buf[at..at + 2] != b"\r\n" {
                        return Err(Invalid::Malformed("chunk data not followed by CRLF"));
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => match buf[at..].windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        at += 2;
                        self.state = ChunkState::Done;
                    }
                    Some(line) => {
                        if line > MAX_LINE {
                            return Err(Invalid::Malformed("trailer line too long"));
                        }
                        at += line + 2;
                    }
                    None => {
                        if buf.len() - at > MAX_LINE + 1 {
                            return Err(Invalid::Malformed("trailer line too long"));
                        }
                        return Ok(at);
                    }
                },
                ChunkState::Done => return Ok(at),
            }
        }
        Ok(at)
    }
}

/// Append `name: value\r\n`.
pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Append a number in decimal.
pub fn put_num(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// The standard reason phrase of a status the gateway answers itself.
pub fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
