//! HTTP/1.1 message framing for the proxy core (RFC 9112): a request or response head is parsed
//! in place with `httparse` (the parser pingora itself uses) into byte ranges of the received
//! head, the fields the gateway acts on are picked out in the same pass, and the body's framing is
//! decided (§6.3). Bodies are forwarded as received; a chunked body is walked, not rewritten, to
//! find where the message ends (or de-chunked for an HTTP/1.0 client).
//!
//! Nothing here allocates per message once a connection's buffers have grown: heads are copied
//! into reusable buffers, fields are ranges into them.
//!
//! Strict where a lenient reading could differ from the upstream's (request smuggling): a
//! request with any `Transfer-Encoding` field (even an empty one) and a `Content-Length` is
//! refused, as is an HTTP/1.1 request without exactly one valid `Host`; chunk-size lines,
//! chunk extensions and trailer lines must end in CRLF and hold no bare CR, LF or control byte.
//! The gateway does not forward a request's chunked framing as received: it re-frames the data
//! ([`Part`]) and drops the trailers it does not allow.

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
    /// `Origin` (CORS).
    Origin,
    /// `Access-Control-*`: in requests the preflight's questions; in answers, fields the
    /// gateway alone writes (CORS is its policy: an upstream's own are dropped).
    AccessControl,
    /// `Cookie`: billing's session cookie is a credential like the key, so it never reaches
    /// the engine.
    Cookie,
    XStellarAgent,
    /// Any other `X-Stellar-*`: never forwarded.
    XStellarOther,
    XRequestId,
    XForwardedFor,
    /// A rate-limit field the gateway sets on its answers.
    RateLimitField,
    /// `Host`.
    Host,
    /// `Forwarded`, `X-Real-IP` and any other `X-Forwarded-*`: what a client says about where it
    /// comes from is never forwarded (the gateway writes `X-Forwarded-For` itself).
    ForwardedOther,
    /// `HTTP2-Settings` (hop-by-hop by definition, RFC 9113 §3.2.1).
    Http2Settings,
    /// A name with `_` that reads as one of the names above once `_` is taken for `-`
    /// (`X_Stellar_User`, `X_API_Key`): CGI, WSGI and others map both to the same name, so such
    /// a field is never forwarded.
    Lookalike,
    Other,
}

impl Name {
    pub fn of(name: &[u8]) -> Name {
        if !name.contains(&b'_') {
            return Name::of_exact(name);
        }
        // Only names with `_` pay for this. Names longer than the buffer can only be lookalikes
        // of the `X-Stellar-*` / `X-Forwarded-*` prefixes.
        let mut buf = [0u8; 64];
        let n = name.len().min(buf.len());
        for (b, c) in buf.iter_mut().zip(&name[..n]) {
            *b = if *c == b'_' { b'-' } else { *c };
        }
        match Name::of_exact(&buf[..n]) {
            Name::Other => Name::Other,
            _ => Name::Lookalike,
        }
    }

    fn of_exact(name: &[u8]) -> Name {
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        match name.len() {
            2 if is("te") => Name::Te,
            4 if is("host") => Name::Host,
            9 if is("forwarded") => Name::ForwardedOther,
            9 if is("x-real-ip") => Name::ForwardedOther,
            14 if is("http2-settings") => Name::Http2Settings,
            6 if is("expect") => Name::Expect,
            6 if is("cookie") => Name::Cookie,
            6 if is("origin") => Name::Origin,
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
            n if n > 15 && name[..15].eq_ignore_ascii_case(b"access-control-") => {
                Name::AccessControl
            }
            n if n > 12 && name[..12].eq_ignore_ascii_case(b"x-forwarded-") => Name::ForwardedOther,
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
                | Name::Http2Settings
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
    check_target_form(method, target)?;
    head.word = range(buf, method.as_bytes());
    head.target = range(buf, target.as_bytes());
    head.minor = minor;
    head.status = 0;
    fill_fields(buf, req.headers, head);
    check_host(buf, head)?;
    head.expect_continue = head
        .get(buf, Name::Expect)
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
    let f = framing(buf, head, true)?;
    if f.te_fields > 0 && f.te.is_none() {
        return Err(Invalid::Malformed("empty Transfer-Encoding"));
    }
    head.body = match (f, head.minor) {
        // RFC 9112 §6.1: TE in an HTTP/1.0 message is faulty framing; §6.3: a request whose
        // final coding is not chunked cannot be delimited. Both TE and Content-Length is the
        // shape of request smuggling: refused rather than guessed.
        (
            Framing {
                te_fields: 1..,
                cl: Some(_),
                ..
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
    let f = framing(buf, head, false)?;
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
    /// `Some(chunked is the final coding)` when Transfer-Encoding names a coding.
    te: Option<bool>,
    /// How many Transfer-Encoding fields there are, empty ones included.
    te_fields: usize,
    /// The Content-Length, all copies agreeing.
    cl: Option<u64>,
}

/// The framing fields of a head. `strict` (requests): an empty Transfer-Encoding element or
/// field, or a Content-Length list, is refused; an upstream's answer is read as leniently as
/// before (empty elements ignored, equal list members accepted).
fn framing(buf: &[u8], head: &Head, strict: bool) -> Result<Framing, Invalid> {
    let mut te: Option<bool> = None;
    let mut te_fields = 0;
    let mut cl: Option<u64> = None;
    for (name, f) in &head.fields {
        match name {
            Name::TransferEncoding => {
                te_fields += 1;
                // An empty field or element (`chunked,`) is refused: readers disagree on it.
                let v = f.value(buf);
                if strict && v.split(|b| *b == b',').any(|t| t.trim_ascii().is_empty()) {
                    return Err(Invalid::Malformed("empty Transfer-Encoding element"));
                }
                // The last coding of the last field decides. `chunked` anywhere before it
                // would mean a body chunked twice (RFC 9112 §6.1 forbids it): refused, not read
                // as once.
                for t in tokens(v) {
                    if strict && te == Some(true) {
                        return Err(Invalid::Malformed("chunked is not the last coding"));
                    }
                    te = Some(t.eq_ignore_ascii_case(b"chunked"));
                }
            }
            Name::ContentLength => {
                // `Content-Length = 1*DIGIT`: a field without a number, or a list (which some
                // readers take the first of and others refuse), is as bad as a wrong one.
                let v = f.value(buf);
                if tokens(v).next().is_none() || (strict && v.contains(&b',')) {
                    return Err(Invalid::Malformed("bad Content-Length"));
                }
                for v in tokens(v) {
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
    Ok(Framing { te, te_fields, cl })
}

/// RFC 9112 §3.2: a request target is in one of four forms: origin-form (`/path?query`),
/// absolute-form (`scheme://authority/path`), authority-form (`host:port`, `CONNECT` only) or
/// asterisk-form (`*`, `OPTIONS` only). Anything else is refused.
fn check_target_form(method: &str, target: &str) -> Result<(), Invalid> {
    let ok = match target.as_bytes().first() {
        Some(b'/') => true,
        Some(b'*') => target == "*" && method == "OPTIONS",
        _ if method == "CONNECT" => matches!(
            target.parse::<http::uri::Authority>(),
            Ok(a) if a.port().is_some() && !a.host().is_empty() && !target.contains('@')
        ),
        _ => matches!(
            target.parse::<http::Uri>(),
            Ok(u) if u.scheme().is_some() && u.authority().is_some_and(|a| !a.host().is_empty())
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(Invalid::Malformed("request target in no HTTP/1.1 form"))
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`; an HTTP/1.0 one at most one. Its
/// value is `uri-host [ ":" port ]` (empty allowed), nothing else.
fn check_host(buf: &[u8], head: &Head) -> Result<(), Invalid> {
    let mut hosts = head.fields.iter().filter(|(n, _)| *n == Name::Host);
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Invalid::Malformed("more than one Host"));
    }
    match host {
        None if head.minor == 1 => Err(Invalid::Malformed("no Host in an HTTP/1.1 request")),
        None => Ok(()),
        Some((_, f)) => {
            let ok = f.value(buf).iter().all(|&c| {
                c.is_ascii_alphanumeric()
                    || matches!(
                        c,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                            | b'%'
                            | b':'
                            | b'['
                            | b']'
                    )
            });
            if ok {
                Ok(())
            } else {
                Err(Invalid::Malformed("bad Host"))
            }
        }
    }
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Walks a chunked body as it arrives, to find where it ends, count its data and pick out its
/// parts: the data (to re-frame a request, or de-chunk an answer for an HTTP/1.0 client) and the
/// trailer fields.
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

/// A part of a chunked body, as byte ranges of the buffer given to [`Chunked::walk_parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Chunk data (a chunk may come in several parts).
    Data(Range<usize>),
    /// One trailer field: the name and the value (trimmed).
    Trailer {
        name: Range<usize>,
        value: Range<usize>,
    },
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
        self.walk_parts(buf, |p| {
            if let Part::Data(r) = p {
                data(r)
            }
        })
    }

    /// [`walk`](Chunked::walk), reporting trailer fields too.
    pub fn walk_parts(&mut self, buf: &[u8], mut part: impl FnMut(Part)) -> Result<usize, Invalid> {
        let mut at = 0;
        while at < buf.len() {
            match self.state {
                ChunkState::Size => match chunk_size_line(&buf[at..])? {
                    Some((used, size)) => {
                        at += used;
                        self.state = if size == 0 {
                            ChunkState::Trailer
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    None => return Ok(at),
                },
                ChunkState::Data(left) => {
                    let n = left.min((buf.len() - at) as u64) as usize;
                    part(Part::Data(at..at + n));
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
                ChunkState::Trailer => match line(&buf[at..], "trailer line too long")? {
                    Some(0) => {
                        at += 2;
                        self.state = ChunkState::Done;
                    }
                    Some(len) => {
                        let (name, value) = trailer_field(&buf[at..at + len])?;
                        part(Part::Trailer {
                            name: at + name.start..at + name.end,
                            value: at + value.start..at + value.end,
                        });
                        at += len + 2;
                    }
                    None => return Ok(at),
                },
                ChunkState::Done => return Ok(at),
            }
        }
        Ok(at)
    }
}

/// The length of the line at the start of `buf` without its CRLF, `None` while incomplete. A
/// bare CR or LF, or any control byte but HTAB, is refused: an upstream that ends lines at a bare
/// LF would otherwise read a different message.
fn line(buf: &[u8], too_long: &'static str) -> Result<Option<usize>, Invalid> {
    for (i, &c) in buf.iter().enumerate() {
        if i > MAX_LINE {
            return Err(Invalid::Malformed(too_long));
        }
        match c {
            b'\r' => {
                return match buf.get(i + 1) {
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err(Invalid::Malformed("bare CR in a chunked body")),
                    None => Ok(None),
                }
            }
            b'\n' => return Err(Invalid::Malformed("bare LF in a chunked body")),
            b'\t' => {}
            c if c < 0x20 || c == 0x7f => {
                return Err(Invalid::Malformed("control byte in a chunked body"))
            }
            _ => {}
        }
    }
    Ok(None)
}

/// `chunk-size [ chunk-ext ] CRLF` (RFC 9112 §7.1): the bytes used and the size, `None` while
/// incomplete. Extensions are checked for their bytes only (the gateway drops them).
fn chunk_size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, Invalid> {
    // `chunk-size = 1*HEXDIG`: checked before the line is complete, so that garbage is refused
    // at once.
    let digits = buf.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    if digits == 0 && !buf.is_empty() {
        return Err(Invalid::Malformed("bad chunk size"));
    }
    if digits > 16 {
        return Err(Invalid::Malformed("chunk size too large"));
    }
    let Some(len) = line(buf, "chunk size line too long")? else {
        return Ok(None);
    };
    match buf.get(digits) {
        Some(b'\r') => {}
        // Extensions: `BWS ";" ...`.
        Some(b';' | b' ' | b'\t') => {
            let ext = &buf[digits..len];
            if ext.trim_ascii_start().first() != Some(&b';') {
                return Err(Invalid::Malformed("bad chunk extension"));
            }
        }
        _ => return Err(Invalid::Malformed("bad chunk size")),
    }
    let size = buf[..digits]
        .iter()
        .fold(0u64, |n, &c| n << 4 | u64::from(hex_value(c)));
    Ok(Some((len + 2, size)))
}

fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// A trailer line (without CRLF) as `field-name ":" OWS field-value OWS`: ranges of the name and
/// the trimmed value.
fn trailer_field(l: &[u8]) -> Result<(Range<usize>, Range<usize>), Invalid> {
    let colon = l
        .iter()
        .position(|&c| c == b':')
        .ok_or(Invalid::Malformed("bad trailer field"))?;
    if colon == 0 || !l[..colon].iter().all(|&c| is_tchar(c)) {
        return Err(Invalid::Malformed("bad trailer field name"));
    }
    let value = &l[colon + 1..];
    let start = colon + 1 + (value.len() - value.trim_ascii_start().len());
    let end = l.len() - (value.len() - value.trim_ascii_end().len());
    Ok((0..colon, start..end.max(start)))
}

/// RFC 9110 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
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
