//! Reading ssio's long-polling transport: the parsers every poller shares,
//! and a client that polls on one keep-alive connection.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::http::{bad, within, HttpConn};

/// The sid in a handshake answer, `{"sid":..,"pingInterval":..,"pingTimeout":..}`.
pub fn handshake_sid(body: &[u8]) -> io::Result<String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    v["sid"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| bad("handshake without sid"))
}

/// One poll's answer: a JSON array of `{"event", "data"}` objects.
pub fn batch(body: &[u8]) -> io::Result<Vec<Value>> {
    match serde_json::from_slice(body).map_err(|e| bad(e.to_string()))? {
        Value::Array(events) => Ok(events),
        _ => Err(bad("poll body not an array")),
    }
}

/// The `user count` values of a batch, in order.
pub fn counts(batch: &[Value]) -> io::Result<Vec<i64>> {
    batch
        .iter()
        .filter(|e| e["event"] == "user count")
        .map(|e| e["data"].as_i64().ok_or_else(|| bad("count not a number")))
        .collect()
}

/// An ssio client over long-polling: one keep-alive connection, one poll at
/// a time.
pub struct PollClient {
    conn: HttpConn,
    server: SocketAddr,
    salt: u32,
    path: String,
    /// Its session.
    pub sid: String,
    /// Longest a poll may be held: the server's ping interval plus slack.
    held: Duration,
}

impl PollClient {
    /// Handshakes; `held` bounds every later poll.
    pub async fn connect(server: SocketAddr, salt: u32, held: Duration) -> io::Result<PollClient> {
        let mut conn = HttpConn::open(server, salt).await?;
        let (status, body) = conn.request("GET", "/poll", b"").await?;
        if status != 200 {
            return Err(bad(format!("poll handshake answered {status}")));
        }
        let sid = handshake_sid(&body)?;
        Ok(PollClient {
            conn,
            server,
            salt,
            path: format!("/poll?sid={sid}"),
            sid,
            held,
        })
    }

    /// Polls once; the `user count` values it brought are appended to `out`.
    pub async fn next(&mut self, out: &mut Vec<i64>) -> io::Result<()> {
        let r = within(self.held, self.conn.request("GET", &self.path, b"")).await;
        let (status, body) = match r {
            Ok(r) => r,
            // A server may close an idle keep-alive connection between
            // polls; a browser would simply open another.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.conn = HttpConn::open(self.server, self.salt).await?;
                within(self.held, self.conn.request("GET", &self.path, b"")).await?
            }
            Err(e) => return Err(e),
        };
        if status != 200 {
            return Err(bad(format!("poll answered {status}")));
        }
        out.extend(counts(&batch(&body)?)?);
        Ok(())
    }

    /// Ends the session with `POST /close`.
    pub async fn leave(self) -> io::Result<()> {
        // The held poll occupies the session's connection, so the close goes
        // on a fresh one, as a page's sendBeacon would.
        let mut c = HttpConn::open(self.server, self.salt).await?;
        let (status, _) = c
            .request("POST", &format!("/close?sid={}", self.sid), b"")
            .await?;
        if status != 204 {
            return Err(bad(format!("close answered {status}")));
        }
        Ok(())
    }
}
