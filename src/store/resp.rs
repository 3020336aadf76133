//! A small Redis client over RESP2: what shared counters need and no more —
//! commands as arrays of bulk strings, the five reply types, a few pooled
//! connections that are re-opened after a failure, and a timeout on every
//! wait (connect, write, read), so a Redis that is down or stuck costs a
//! bounded delay and never a hang. Scripts run with `EVAL` (Redis keeps the
//! compiled script; the source is a few hundred bytes on loopback).

use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// A reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(a)) => a,
            _ => &[],
        }
    }
}

/// Why a command did not get a reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Io(String),
    #[error("redis: no answer within {0} ms")]
    Timeout(u64),
    #[error("redis replied with an error: {0}")]
    Reply(String),
    #[error("redis: unreadable reply ({0})")]
    Protocol(String),
}

/// Where Redis is: `redis://[:password@]host:port[/db]`.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: String,
    pub password: Option<String>,
    pub db: Option<u32>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .finish()
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_string(),
        },
    }
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let shown = redact_url(url);
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("`{shown}` is not a redis:// URL"))?;
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (host, db) = match hostpart.split_once('/') {
            Some((h, d)) if !d.is_empty() => (
                h,
                Some(
                    d.parse::<u32>()
                        .map_err(|_| format!("`{shown}`: database `{d}` is not a number"))?,
                ),
            ),
            Some((h, _)) => (h, None),
            None => (hostpart, None),
        };
        if host.is_empty() {
            return Err(format!("`{shown}` names no host"));
        }
        let addr = if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:6379")
        };
        let password = auth
            .map(|a| a.strip_prefix(':').unwrap_or(a).to_string())
            .filter(|p| !p.is_empty());
        Ok(Endpoint { addr, password, db })
    }
}

/// A connection and what is buffered from it.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// Up to `size` connections, opened on demand.
pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    size: usize,
}

impl Client {
    pub fn new(endpoint: Endpoint, timeout: Duration, size: usize) -> Client {
        Client {
            endpoint,
            timeout,
            idle: Mutex::new(Vec::new()),
            size: size.max(1),
        }
    }

    fn timeout_ms(&self) -> u64 {
        self.timeout.as_millis() as u64
    }

    async fn open(&self) -> Result<Conn, RedisError> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(&self.endpoint.addr))
            .await
            .map_err(|_| RedisError::Timeout(self.timeout_ms()))?
            .map_err(|e| RedisError::Io(format!("connect {}: {e}", self.endpoint.addr)))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(4096),
        };
        if let Some(p) = self.endpoint.password.clone() {
            self.exchange(&mut conn, &[b"AUTH", p.as_bytes()]).await?;
        }
        if let Some(db) = self.endpoint.db {
            let db = db.to_string();
            self.exchange(&mut conn, &[b"SELECT", db.as_bytes()])
                .await?;
        }
        Ok(conn)
    }

    /// One command on one connection, within the timeout.
    async fn exchange(&self, conn: &mut Conn, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let work = async {
            conn.stream
                .write_all(&encode(args))
                .await
                .map_err(|e| RedisError::Io(e.to_string()))?;
            loop {
                if let Some(reply) = parse(&mut conn.buf)? {
                    return Ok(reply);
                }
                let n = conn
                    .stream
                    .read_buf(&mut conn.buf)
                    .await
                    .map_err(|e| RedisError::Io(e.to_string()))?;
                if n == 0 {
                    return Err(RedisError::Io("connection closed".into()));
                }
            }
        };
        let reply = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| RedisError::Timeout(self.timeout_ms()))??;
        match reply {
            Reply::Error(e) => Err(RedisError::Reply(e)),
            r => Ok(r),
        }
    }

    /// Run a command. A connection that failed is dropped (the next command
    /// opens a fresh one); an error reply keeps the connection. A pooled
    /// connection that turns out dead (Redis restarted since) drops the
    /// whole pool and the command is sent once more on a fresh connection:
    /// the scripts are safe to repeat (their members are chosen by the
    /// caller), and without this every pooled connection would fail one
    /// request after each Redis restart.
    pub async fn cmd(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let pooled = self.idle.lock().await.pop();
        let (mut conn, was_pooled) = match pooled {
            Some(c) => (c, true),
            None => (self.open().await?, false),
        };
        let mut out = self.exchange(&mut conn, args).await;
        if was_pooled && matches!(out, Err(RedisError::Io(_))) {
            self.idle.lock().await.clear();
            conn = self.open().await?;
            out = self.exchange(&mut conn, args).await;
        }
        if matches!(out, Ok(_) | Err(RedisError::Reply(_))) {
            let mut idle = self.idle.lock().await;
            if idle.len() < self.size {
                idle.push(conn);
            }
        }
        out
    }

    /// Run a Lua script.
    pub async fn eval(
        &self,
        script: &str,
        keys: &[&str],
        args: &[&str],
    ) -> Result<Reply, RedisError> {
        let nkeys = keys.len().to_string();
        let mut argv: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), nkeys.as_bytes()];
        argv.extend(keys.iter().chain(args.iter()).map(|s| s.as_bytes()));
        self.cmd(&argv).await
    }
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One whole reply from the front of `buf` (consumed), `None` when more
/// bytes are needed.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Reply>, RedisError> {
    let mut pos = 0;
    match parse_at(buf, &mut pos)? {
        Some(r) => {
            buf.advance(pos);
            Ok(Some(r))
        }
        None => Ok(None),
    }
}

fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = &buf[*pos..];
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    *pos += end + 2;
    Some(&rest[..end])
}

fn number(l: &[u8]) -> Result<i64, RedisError> {
    std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RedisError::Protocol(format!("bad length `{}`", String::from_utf8_lossy(l))))
}

fn parse_at(buf: &[u8], pos: &mut usize) -> Result<Option<Reply>, RedisError> {
    let Some(&kind) = buf.get(*pos) else {
        return Ok(None);
    };
    *pos += 1;
    let Some(l) = line(buf, pos) else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(l).into_owned();
    Ok(Some(match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(number(l)?),
        b'$' => {
            let n = number(l)?;
            if n < 0 {
                return Ok(Some(Reply::Bulk(None)));
            }
            let n = n as usize;
            if buf.len() < *pos + n + 2 {
                return Ok(None);
            }
            let data = buf[*pos..*pos + n].to_vec();
            *pos += n + 2;
            Reply::Bulk(Some(data))
        }
        b'*' => {
            let n = number(l)?;
            if n < 0 {
                return Ok(Some(Reply::Array(None)));
            }
            let mut items = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                match parse_at(buf, pos)? {
                    Some(r) => items.push(r),
                    None => return Ok(None),
                }
            }
            Reply::Array(Some(items))
        }
        other => {
            return Err(RedisError::Protocol(format!(
                "unknown reply type `{}`",
                other as char
            )))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_whole_or_wait_for_more() {
        let wire = b"*3\r\n:1\r\n$5\r\nhello\r\n*2\r\n+OK\r\n$-1\r\n-ERR no\r\n";
        for cut in 0..wire.len() {
            let mut b = BytesMut::from(&wire[..cut]);
            let r = parse(&mut b).unwrap();
            assert!(r.is_none() || cut >= wire.len() - 10, "cut {cut}: {r:?}");
        }
        let mut b = BytesMut::from(&wire[..]);
        let r = parse(&mut b).unwrap().unwrap();
        assert_eq!(
            r,
            Reply::Array(Some(vec![
                Reply::Int(1),
                Reply::Bulk(Some(b"hello".to_vec())),
                Reply::Array(Some(vec![Reply::Simple("OK".into()), Reply::Bulk(None)])),
            ]))
        );
        assert_eq!(parse(&mut b).unwrap(), Some(Reply::Error("ERR no".into())));
        assert_eq!(parse(&mut b).unwrap(), None);
    }

    #[test]
    fn commands_encode_as_bulk_arrays() {
        assert_eq!(encode(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("redis://:pw@10.0.0.1:6380/2").unwrap();
        assert_eq!(
            (e.addr.as_str(), e.password.as_deref(), e.db),
            ("10.0.0.1:6380", Some("pw"), Some(2))
        );
        let e = Endpoint::parse("redis://localhost").unwrap();
        assert_eq!(e.addr, "localhost:6379");
        assert!(Endpoint::parse("http://x").is_err());
    }
}
