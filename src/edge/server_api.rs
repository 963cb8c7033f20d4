//! The server API: a backend in any language publishes, disconnects, and
//! moves sessions between rooms over plain HTTP and JSON, behind a key.
//!
//! It exists only while `--api-key` names a key: without one every
//! `/api/*` path answers 404, as if there were no API. Every request
//! carries exactly one `Authorization: Bearer <key>`; the key is compared
//! with each configured key through SHA-256 digests in constant time, so
//! neither the position of the first wrong byte nor the key's length shows
//! in the time an answer takes.
//!
//! A command that names a session this node does not hold is replayed on
//! the node that holds it (as `reroute` does for a client's own requests),
//! so a backend may send every command to any node.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use bytes::Bytes;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::io::Io;
use crate::cluster::forward;
use crate::config::Config;
use crate::edge::router::check_event_name;
use crate::edge::statics;
use crate::engine::fanout;
use crate::engine::recovery::Cursor;
use crate::error::{BackendError, Error};
use crate::session::{DisconnectReason, Sid, Transport};
use crate::transport::http::{self, ResponseBody};

/// Whether the API is on: some non-empty key is configured.
pub(crate) fn enabled(config: &Config) -> bool {
    config.api_keys.iter().any(|k| !k.is_empty())
}

/// Whether `path` belongs to the API.
pub(crate) fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// Answers a request on the `--api-listen` address: the API, nothing else.
pub(crate) async fn handle_listen<B>(io: &Io, req: Request<B>) -> Response<ResponseBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    // The admin page calls the API on the address it came from, so it is
    // served here too when the API has an address of its own.
    let admin = matches!(
        path.as_str(),
        "/admin" | "/public/admin.js" | "/public/admin.css"
    );
    let answer = if is_api(&path) {
        handle(io, req).await
    } else if admin && method == Method::GET && enabled(io.config()) {
        let file = statics::lookup(&path).ok_or(Error::NotFound);
        file.map(|f| statics::static_file(f, req.headers()))
    } else {
        Err(Error::NotFound)
    };
    answer.unwrap_or_else(|e| {
        io.refused(method.as_str(), &path, &e);
        http::error(&e)
    })
}

/// Answers one `/api/*` request.
pub(crate) async fn handle<B>(io: &Io, req: Request<B>) -> Result<Response<ResponseBody>, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = io.config();
    if !enabled(config) {
        return Err(Error::NotFound);
    }
    authorize(config, req.headers())?;
    let headers = req.headers().clone();
    let local = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "local=1"));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match (&method, path.as_str()) {
        (&Method::GET, "/api/rooms") => Ok(ok(rooms(io, &headers, local).await)),
        (&Method::GET, "/api/info") => Ok(ok(info(io, &headers, local).await)),
        (&Method::GET, "/api/presence") => {
            let query = PresenceQuery::parse(req.uri().query())?;
            Ok(ok(presence(io, &headers, &query, local).await))
        }
        (&Method::POST, "/api/batch") => {
            let body = parse_object(&http::read_body(config, req).await?)?;
            let Some(Value::Array(commands)) = body.get("commands") else {
                return Err(Error::BadJson("\"commands\" must be an array".into()));
            };
            if commands.len() > config.api_max_batch {
                return Err(Error::BatchTooLarge(config.api_max_batch));
            }
            let mut replies = Vec::with_capacity(commands.len());
            for command in commands {
                let reply = match batch_command(command) {
                    Ok((name, params)) => run(io, &headers, name, params).await,
                    Err(e) => Err(e),
                };
                replies.push(match reply {
                    Ok(result) => json!({ "result": result }),
                    Err(e) => json!({ "error": e.to_string() }),
                });
            }
            Ok(ok(json!({ "replies": replies })))
        }
        (&Method::POST, p) if command_name(p).is_some() => {
            let params = parse_object(&http::read_body(config, req).await?)?;
            let name = command_name(p).unwrap_or_default();
            Ok(ok(run(io, &headers, name, params).await?))
        }
        (_, "/api/rooms" | "/api/info" | "/api/presence") => Err(Error::MethodNotAllowed("GET")),
        (_, p) if command_name(p).is_some() || p == "/api/batch" => {
            Err(Error::MethodNotAllowed("POST"))
        }
        _ => Err(Error::NotFound),
    }
}

/// Refuses a request unless it carries exactly one `Authorization` header
/// whose bearer token is a configured key. Every key is compared, found or
/// not, so the answer takes as long whichever key matches.
fn authorize(config: &Config, headers: &HeaderMap) -> Result<(), Error> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Error::ApiKey);
    };
    let value = value.as_bytes();
    let scheme = b"bearer ";
    if value.len() <= scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err(Error::ApiKey);
    }
    let given = &value[scheme.len()..];
    if key_matches(&config.api_keys, given) {
        Ok(())
    } else {
        Err(Error::ApiKey)
    }
}

/// Whether `given` is one of `keys` (empty keys never match), in time that
/// depends on neither: digests are compared, so lengths differ nowhere.
fn key_matches(keys: &[String], given: &[u8]) -> bool {
    let given = Sha256::digest(given);
    let mut found = subtle::Choice::from(0);
    for key in keys {
        let digest = Sha256::digest(key.as_bytes());
        found |= digest.ct_eq(&given) & subtle::Choice::from(u8::from(!key.is_empty()));
    }
    found.into()
}

/// The command a `POST /api/<name>` path runs.
fn command_name(path: &str) -> Option<&'static str> {
    match path {
        "/api/publish" => Some("publish"),
        "/api/disconnect" => Some("disconnect"),
        "/api/join" => Some("join"),
        "/api/leave" => Some("leave"),
        "/api/session" => Some("session"),
        _ => None,
    }
}

/// One entry of a batch: `{"method": <name>, "params": {...}}`.
fn batch_command(command: &Value) -> Result<(&'static str, Map<String, Value>), Error> {
    let name = match command.get("method").and_then(Value::as_str) {
        Some(m) => command_name(&format!("/api/{m}"))
            .ok_or_else(|| Error::BadJson(format!("unknown method {m:?}")))?,
        None => return Err(Error::BadJson("\"method\" must be a string".into())),
    };
    match command.get("params") {
        Some(Value::Object(params)) => Ok((name, params.clone())),
        None => Ok((name, Map::new())),
        Some(_) => Err(Error::BadJson("\"params\" must be an object".into())),
    }
}

/// Runs one command, here or on the node that holds its session.
async fn run(
    io: &Io,
    headers: &HeaderMap,
    name: &'static str,
    params: Map<String, Value>,
) -> Result<Value, Error> {
    let sid = match params.get("sid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Sid::try_parse(s).map_err(|_| Error::ApiUnknownSession)?),
        Some(_) => return Err(Error::BadJson("\"sid\" must be a string".into())),
    };
    if name != "publish" && sid.is_none() {
        return Err(Error::BadJson("missing \"sid\"".into()));
    }
    if let Some(sid) = sid {
        if io.socket_of(&sid).is_none() {
            return elsewhere(io, headers, name, sid, &params).await;
        }
    }
    match name {
        "publish" => publish(io, params, sid),
        "disconnect" => {
            let sid = sid.ok_or(Error::ApiUnknownSession)?;
            if !io.hub().disconnect(sid, DisconnectReason::ServerDisconnect) {
                return Err(Error::ApiUnknownSession);
            }
            Ok(json!({}))
        }
        "session" => {
            let socket = sid
                .and_then(|sid| io.socket_of(&sid))
                .ok_or(Error::ApiUnknownSession)?;
            let mut rooms = socket.rooms();
            rooms.sort();
            Ok(json!({
                "sid": socket.id().to_string(),
                "user": socket.user_id(),
                "transport": socket.transport().as_str(),
                "rooms": rooms,
            }))
        }
        _ => {
            let room = match params.get("room") {
                Some(Value::String(room)) => room,
                _ => return Err(Error::BadJson("\"room\" must be a string".into())),
            };
            let socket = sid
                .and_then(|sid| io.socket_of(&sid))
                .ok_or(Error::ApiUnknownSession)?;
            if name == "join" {
                socket.join(room)?;
            } else {
                socket.leave(room);
            }
            Ok(json!({}))
        }
    }
}

/// `publish`: to everyone, to a room, or to one session; answers the log
/// position right after it, from which a page rendered now can subscribe.
fn publish(io: &Io, mut params: Map<String, Value>, sid: Option<Sid>) -> Result<Value, Error> {
    let config = io.config();
    let event = match params.remove("event") {
        Some(Value::String(event)) => event,
        _ => return Err(Error::BadJson("\"event\" must be a string".into())),
    };
    check_event_name(&event, config.max_event_name)?;
    let room = match params.remove("room") {
        None | Some(Value::Null) => None,
        Some(Value::String(room)) if !room.is_empty() && room.len() <= config.max_room_name => {
            Some(room)
        }
        Some(Value::String(_)) => return Err(Error::BadRoom("empty or too long")),
        Some(_) => return Err(Error::BadJson("\"room\" must be a string".into())),
    };
    if room.is_some() && sid.is_some() {
        return Err(Error::BadJson("give \"room\" or \"sid\", not both".into()));
    }
    let key = match params.remove("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k))
            if !k.is_empty() && k.len() <= config.api_max_idempotency_key_bytes =>
        {
            Some(k)
        }
        Some(_) => {
            return Err(Error::BadJson(format!(
                "\"idempotency_key\" must be a string of 1 to {} bytes",
                config.api_max_idempotency_key_bytes
            )))
        }
    };
    let data = params.remove("data").unwrap_or(Value::Null);
    let seen = io.extension::<Idempotency>();
    if let Some(key) = &key {
        if let Some(earlier) = seen.begin(key, config.api_max_idempotency_keys)? {
            return Ok(earlier);
        }
    }
    // The local backend appends on this thread, before `emit` returns.
    fanout::take_appended_end();
    match (&room, sid) {
        (Some(room), _) => io.to(room).emit(&event, data),
        (None, Some(sid)) => match io.socket_of(&sid) {
            Some(socket) => socket.emit(&event, data),
            None => {
                if let Some(key) = &key {
                    seen.abandon(key);
                }
                return Err(Error::ApiUnknownSession);
            }
        },
        (None, None) => io.emit(&event, data),
    }
    // Right after this publish's own event, never past another thread's.
    // A shared backend appends only when the event comes back from it,
    // so the end read now is before it: the page gets its own event once
    // more, but misses nothing.
    let end = fanout::take_appended_end().unwrap_or_else(|| io.hub().fanout().end());
    let cursor = Cursor {
        sid: Sid::nil(),
        broadcast: end,
        direct: 0,
    };
    let result = json!({ "cursor": cursor.to_string() });
    if let Some(key) = key {
        seen.finish(key, result.clone());
    }
    Ok(result)
}

/// The `idempotency_key`s of recent publishes with their answers, oldest
/// first out once `--api-max-idempotency-keys` are held: a flood of
/// distinct keys costs a bounded table, and a retry within the last that
/// many publishes is answered from it without a second delivery.
#[derive(Default)]
pub(crate) struct Idempotency {
    /// The table and its order; held only for map work, never across an
    /// `.await`.
    inner: parking_lot::Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    /// Each key's answer; `None` while its publish is under way.
    answers: HashMap<String, Option<Value>>,
    /// Keys in the order they came, for forgetting the oldest.
    order: VecDeque<String>,
}

impl Idempotency {
    /// The earlier answer for `key`, or `None` after marking it under way.
    fn begin(&self, key: &str, max: usize) -> Result<Option<Value>, Error> {
        let mut r = self.inner.lock();
        match r.answers.get(key) {
            Some(Some(answer)) => return Ok(Some(answer.clone())),
            Some(None) => return Err(Error::IdempotencyBusy),
            None => {}
        }
        if max == 0 {
            return Ok(None);
        }
        while r.order.len() >= max {
            if let Some(old) = r.order.pop_front() {
                r.answers.remove(&old);
            }
        }
        r.answers.insert(key.to_string(), None);
        r.order.push_back(key.to_string());
        Ok(None)
    }

    /// Records `key`'s answer (if it is still remembered).
    fn finish(&self, key: String, answer: Value) {
        if let Some(slot) = self.inner.lock().answers.get_mut(&key) {
            *slot = Some(answer);
        }
    }

    /// Forgets a key whose publish failed, so a retry publishes.
    fn abandon(&self, key: &str) {
        let mut r = self.inner.lock();
        if r.answers.remove(key).is_some() {
            r.order.retain(|k| k != key);
        }
    }

    /// Keys remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().answers.len()
    }
}

/// Replays a command for a session this node does not hold on the node
/// that holds it; with no such node, the session is unknown.
async fn elsewhere(
    io: &Io,
    headers: &HeaderMap,
    name: &'static str,
    sid: Sid,
    params: &Map<String, Value>,
) -> Result<Value, Error> {
    let config = io.config();
    if config.cluster_node().is_none() || headers.contains_key(forward::FORWARDED) {
        return Err(Error::ApiUnknownSession);
    }
    let addr = match io.hub().backend.locate(*sid.as_uuid()).await {
        Ok(Some(addr)) => addr,
        Ok(None) => return Err(Error::ApiUnknownSession),
        Err(e) => return Err(e.into()),
    };
    let body = Bytes::from(Value::Object(params.clone()).to_string());
    let target = format!("/api/{name}");
    let (status, value) = replay(io, headers, &addr, Method::POST, &target, body).await?;
    let why = || {
        value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no answer")
            .to_string()
    };
    match status {
        s if s.is_success() => Ok(value),
        StatusCode::NOT_FOUND => Err(Error::ApiUnknownSession),
        StatusCode::BAD_REQUEST => Err(Error::BadJson(why())),
        _ => Err(Error::Backend(BackendError(why()))),
    }
}

/// Sends an API request, with this request's key, to the node at `addr`;
/// returns its status and JSON answer.
async fn replay(
    io: &Io,
    headers: &HeaderMap,
    addr: &str,
    method: Method,
    target: &str,
    body: Bytes,
) -> Result<(StatusCode, Value), Error> {
    let config = io.config();
    let mut replayed = HeaderMap::new();
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        replayed.insert(header::AUTHORIZATION, auth.clone());
    }
    replayed.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let peers = io.extension::<forward::Peers>();
    let slot = peers.admit(addr, config.forward_max_inflight)?;
    let res = forward::forward(forward::Forward {
        client: peers.client(config),
        addr,
        method,
        target,
        headers: replayed,
        body,
        from: config.cluster_node().unwrap_or_default(),
        vouch: None,
        slot,
        within: config.ping_timeout(),
        stream: None,
    })
    .await?;
    let status = res.status();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// `{"rooms": [{"room", "members"}]}`, sorted by name, members sorted:
/// every node's rooms merged, each node's asked of it
/// (`/api/rooms?local=1`) with this request's key (`local`: this node's
/// own only). A node that does not answer is left out, as in `info`.
async fn rooms(io: &Io, headers: &HeaderMap, local: bool) -> Value {
    let mut merged: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (room, members) in io.hub().fanout().room_list() {
        merged
            .entry(room.to_string())
            .or_default()
            .extend(members.iter().map(Sid::to_string));
    }
    let me = io.config().cluster_node();
    if !local && me.is_some() {
        let listed = io.hub().backend.nodes().await.unwrap_or_default();
        for (node, addr) in listed {
            if Some(node.as_str()) == me {
                continue;
            }
            let asked = replay(
                io,
                headers,
                &addr,
                Method::GET,
                "/api/rooms?local=1",
                Bytes::new(),
            );
            let Ok((status, answer)) = asked.await else {
                continue;
            };
            let Some(theirs) = answer["rooms"].as_array().filter(|_| status.is_success()) else {
                continue;
            };
            for entry in theirs {
                let (Some(room), Some(members)) =
                    (entry["room"].as_str(), entry["members"].as_array())
                else {
                    continue;
                };
                merged
                    .entry(room.to_string())
                    .or_default()
                    .extend(members.iter().filter_map(Value::as_str).map(str::to_string));
            }
        }
    }
    let rooms: Vec<Value> = merged
        .into_iter()
        .map(|(room, members)| json!({ "room": room, "members": members }))
        .collect();
    json!({ "rooms": rooms })
}

/// Members listed per `/api/presence` page unless `limit` says otherwise.
const PRESENCE_PAGE: usize = 1000;
/// The largest `limit` a `/api/presence` page may ask for.
const PRESENCE_PAGE_MAX: usize = 10_000;

/// What a `/api/presence` request asks for.
struct PresenceQuery {
    room: Option<String>,
    after: Option<Sid>,
    limit: usize,
}

impl PresenceQuery {
    fn parse(query: Option<&str>) -> Result<PresenceQuery, Error> {
        use crate::session::query_value;
        let room = query_value(query, "room").map(|r| r.into_owned());
        if room.as_deref() == Some("") {
            return Err(Error::BadQuery("room is empty"));
        }
        let after = match query_value(query, "after") {
            None => None,
            Some(s) => Some(Sid::try_parse(&s).map_err(|_| Error::BadQuery("after is not a sid"))?),
        };
        let limit = match query_value(query, "limit") {
            None => PRESENCE_PAGE,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=PRESENCE_PAGE_MAX).contains(&n) => n,
                _ => return Err(Error::BadQuery("limit must be 1 to 10000")),
            },
        };
        Ok(PresenceQuery { room, after, limit })
    }

    /// The query for another node's own answer.
    fn local_target(&self) -> String {
        let mut target = format!("/api/presence?local=1&limit={}", self.limit);
        if let Some(room) = &self.room {
            target.push_str("&room=");
            target.extend(form_urlencoded::byte_serialize(room.as_bytes()));
        }
        if let Some(after) = self.after {
            target.push_str(&format!("&after={after}"));
        }
        target
    }
}

/// `/api/presence`: who is connected, to the server or to `room`: the
/// totals, and one page of members sorted by sid, over every live node
/// (`local`: this node's own, with the people behind its total, which is
/// what one node asks of each other). People are merged by key, so a user
/// with sessions on two nodes counts once.
async fn presence(io: &Io, headers: &HeaderMap, query: &PresenceQuery, local: bool) -> Value {
    let here = io.presence_here(query.room.as_deref(), query.after, query.limit);
    let page =
        |p: &crate::Presence| -> Vec<Value> { p.members.iter().map(|m| m.to_json()).collect() };
    if local || io.config().cluster_node().is_none() {
        let mut answer = json!({
            "clients": here.presence.clients,
            "users": here.presence.users,
            "members": page(&here.presence),
            "next": here.presence.next.map(|s| s.to_string()),
        });
        if local {
            answer["solo"] = here.solo.into();
            answer["persons"] = here.persons.into();
        }
        return answer;
    }
    let mut clients = here.presence.clients;
    let mut solo = here.solo;
    let mut persons: BTreeSet<String> = here.persons.into_iter().collect();
    let mut members: Vec<(String, Value)> = page(&here.presence)
        .into_iter()
        .map(|m| (m["sid"].as_str().unwrap_or_default().to_string(), m))
        .collect();
    let mut more = here.presence.next.is_some();
    let me = io.config().cluster_node();
    let listed = io.hub().backend.nodes().await.unwrap_or_default();
    let target = query.local_target();
    for (node, addr) in listed {
        if Some(node.as_str()) == me {
            continue;
        }
        let asked = replay(io, headers, &addr, Method::GET, &target, Bytes::new());
        let Ok((status, theirs)) = asked.await else {
            continue;
        };
        if !status.is_success() {
            continue;
        }
        clients += theirs["clients"].as_u64().unwrap_or(0) as usize;
        solo += theirs["solo"].as_u64().unwrap_or(0) as usize;
        let keys = theirs["persons"].as_array().into_iter().flatten();
        persons.extend(keys.filter_map(Value::as_str).map(String::from));
        more |= !theirs["next"].is_null();
        let listed = theirs["members"].as_array().into_iter().flatten();
        for m in listed {
            if let Some(sid) = m["sid"].as_str() {
                members.push((sid.to_string(), m.clone()));
            }
        }
    }
    members.sort_by(|a, b| a.0.cmp(&b.0));
    more |= members.len() > query.limit;
    members.truncate(query.limit);
    let next = more
        .then(|| members.last().map(|(sid, _)| sid.clone()))
        .flatten();
    json!({
        "clients": clients,
        "users": solo + persons.len(),
        "members": members.into_iter().map(|(_, m)| m).collect::<Vec<_>>(),
        "next": next,
    })
}

/// `/api/info`: this server's version, counts and deliveries, and each
/// live node's sessions (`local`: this node's own figures only, which is
/// what one node asks of each other for its list).
async fn info(io: &Io, headers: &HeaderMap, local: bool) -> Value {
    let hub = io.hub();
    let node = io.config().cluster_node();
    let (sse, polling) = (
        hub.transport_count(Transport::Sse),
        hub.transport_count(Transport::Polling),
    );
    let this = json!({
        "node": node, "sessions": hub.session_count(), "sse": sse, "polling": polling,
    });
    let nodes = if local || node.is_none() {
        vec![this]
    } else {
        cluster_nodes(io, headers, this).await
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node": node,
        "count": io.count(),
        "sessions": hub.session_count(),
        "sse": sse,
        "polling": polling,
        "deliveries": hub.metrics.deliveries(),
        "nodes": nodes,
    })
}

/// Each live node's own figures, asked of it (`/api/info?local=1`) with
/// this request's key. A node that does not answer is left out: it is
/// gone, and its lease runs out within the heartbeat bound.
async fn cluster_nodes(io: &Io, headers: &HeaderMap, this: Value) -> Vec<Value> {
    let me = io.config().cluster_node().unwrap_or_default();
    let listed = match io.hub().backend.nodes().await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the cluster's nodes");
            return vec![this];
        }
    };
    let mut nodes = Vec::with_capacity(listed.len());
    for (node, addr) in listed {
        if node == me {
            nodes.push(this.clone());
            continue;
        }
        let asked = replay(
            io,
            headers,
            &addr,
            Method::GET,
            "/api/info?local=1",
            Bytes::new(),
        );
        match asked.await {
            Ok((status, answer)) if status.is_success() => {
                if let Some(figures) = answer["nodes"].get(0) {
                    nodes.push(figures.clone());
                }
            }
            Ok((status, _)) => tracing::debug!(%node, %status, "a node refused its figures"),
            Err(e) => tracing::debug!(%node, error = %e, "a node did not give its figures"),
        }
    }
    if !nodes.iter().any(|n| n["node"] == me) {
        nodes.push(this);
    }
    nodes
}

/// The body of every API request: one JSON object.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Error> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::BadJson("expected an object".into())),
        Err(e) => Err(Error::BadJson(e.to_string())),
    }
}

fn ok(body: Value) -> Response<ResponseBody> {
    http::json(StatusCode::OK, Bytes::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_matches_only_itself_whatever_its_length() {
        let keys = vec!["old-key".to_string(), "new-key-2".to_string()];
        assert!(key_matches(&keys, b"old-key"));
        assert!(key_matches(&keys, b"new-key-2"));
        for wrong in [&b""[..], b"old-ke", b"old-key ", b"new-key-", b"OLD-KEY"] {
            assert!(!key_matches(&keys, wrong), "{wrong:?}");
        }
        // An empty configured key (`SSIO_API_KEY=""`) opens nothing.
        assert!(!key_matches(&[String::new()], b""));
    }

    #[test]
    fn the_comparison_is_of_fixed_size_digests() {
        // Timing cannot be measured reliably on a shared machine; what makes
        // the comparison constant-time is that both sides are 32-byte
        // digests compared with `subtle`, whatever the inputs' lengths.
        let long = vec![b'k'; 10_000];
        assert_eq!(Sha256::digest(&long).len(), Sha256::digest(b"k").len());
        assert!(!key_matches(&["k".to_string()], &long));
    }

    #[test]
    fn the_idempotency_table_keeps_only_the_newest_keys() {
        let t = Idempotency::default();
        for i in 0..1000 {
            let key = format!("k{i}");
            assert_eq!(t.begin(&key, 10), Ok(None));
            t.finish(key, json!(i));
        }
        assert_eq!(t.len(), 10);
        assert_eq!(t.begin("k999", 10), Ok(Some(json!(999))));
        assert_eq!(t.begin("k990", 10), Ok(Some(json!(990))));
        assert_eq!(t.begin("k989", 10), Ok(None));
        assert_eq!(t.begin("k989", 10), Err(Error::IdempotencyBusy));
    }
}
