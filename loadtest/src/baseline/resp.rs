//! Just enough of Redis's protocol (RESP2) for the baseline: commands out, replies in, a few pooled
//! connections. `SET … NX PX`, `EVAL` of a compare-and-delete or compare-and-extend script, `MGET`
//! and `SCAN` are all the design needs.

use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One reply. Errors (`-ERR …`) come back as `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `:1`, or a bulk string.
    Text(String),
    /// A nil bulk string (`$-1`): `GET` of no key, `SET NX` that did not set.
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// One RESP connection.
struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    async fn connect(addr: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("redis {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Self { stream: BufReader::new(stream) })
    }

    async fn call(&mut self, args: &[&str]) -> Result<Reply, String> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.stream.get_mut().write_all(out.as_bytes()).await.map_err(|e| e.to_string())?;
        self.reply().await
    }

    async fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
            return Err("redis closed the connection".into());
        }
        Ok(line.trim_end_matches("\r\n").to_owned())
    }

    fn reply(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, String>> + Send + '_>> {
        Box::pin(async move {
            let line = self.line().await?;
            let (kind, rest) = line.split_at(1.min(line.len()));
            match kind {
                "+" | ":" => Ok(Reply::Text(rest.to_owned())),
                "-" => Err(format!("redis: {rest}")),
                "$" if rest == "-1" => Ok(Reply::Nil),
                "$" => {
                    let n: usize = rest.parse().map_err(|_| "redis: bad bulk length")?;
                    let mut buf = vec![0; n + 2];
                    self.stream.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
                    buf.truncate(n);
                    String::from_utf8(buf).map(Reply::Text).map_err(|_| "redis: bulk not UTF-8".into())
                }
                "*" if rest == "-1" => Ok(Reply::Nil),
                "*" => {
                    let n: usize = rest.parse().map_err(|_| "redis: bad array length")?;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.reply().await?);
                    }
                    Ok(Reply::Array(items))
                }
                _ => Err(format!("redis: unexpected reply {line:?}")),
            }
        })
    }
}

/// Connections taken and given back; a connection that failed is dropped, not reused.
pub struct Redis {
    addr: String,
    idle: Mutex<Vec<Conn>>,
}

impl Redis {
    pub fn new(addr: &str) -> Self {
        Self { addr: addr.to_owned(), idle: Mutex::new(Vec::new()) }
    }

    pub async fn call(&self, args: &[&str]) -> Result<Reply, String> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut conn = match idle {
            Some(c) => c,
            None => Conn::connect(&self.addr).await?,
        };
        let answer = conn.call(args).await;
        if answer.is_ok() {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(conn);
            }
        }
        answer
    }

    /// How many keys match `pattern` (SCAN, so Redis is never blocked).
    pub async fn count(&self, pattern: &str) -> Result<usize, String> {
        let (mut cursor, mut n) = ("0".to_owned(), 0);
        loop {
            let Reply::Array(reply) =
                self.call(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"]).await?
            else {
                return Err("redis: SCAN did not answer an array".into());
            };
            cursor = reply.first().and_then(Reply::text).unwrap_or("0").to_owned();
            if let Some(Reply::Array(keys)) = reply.get(1) {
                n += keys.len();
            }
            if cursor == "0" {
                return Ok(n);
            }
        }
    }
}
