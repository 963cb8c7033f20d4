//! The cluster backend: many nodes share one exact count and every
//! broadcast through Redis.
//!
//! - **The count** is decided in Redis by one Lua script (`lease.lua`): a
//!   join or leave, the new count and its version are one atomic step. Every
//!   change is announced on a channel as `"<version> <count>"`, and a node
//!   shows a count only if its version is newer than the one it shows, so no
//!   client ever sees a stale count after a newer one.
//! - **Liveness is leased, not counted**: a crashed node never decrements
//!   anything, so each node renews a lease (expiry in Redis time) on all its
//!   sessions, and the next script call after a lease runs out removes that
//!   node's sessions. See [`Timing`] for the bound.
//! - **Repair**: each renewal also re-reads the count, so a lost
//!   announcement (a reconnect, a slow subscriber) is repaired within one
//!   renewal, and at once after the subscription reconnects. Redis losing
//!   its data (a restart) shows as a missing or different epoch; the node
//!   then registers all its live sessions again.
//! - **Broadcasts** go out as one `PUBLISH` per emit, from one task in call
//!   order (per-sender order), and each node delivers them to its own
//!   sessions. The sending node delivers its own at once, without the round
//!   trip.
//! - **Liveness of the subscription** is probed: each node publishes on its
//!   own probe channel every renewal and must hear something through its
//!   subscription; a subscription that stays silent is replaced.
//!
//! While Redis is unreachable the node keeps serving its sessions and their
//! broadcasts, refuses new sessions (503, the join cannot be counted), keeps
//! showing the last count it could vouch for, and reports itself not
//! connected in [`Backend::status`] (so `/readyz` answers 503).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;
use tokio::sync::{mpsc, Notify, RwLock};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::engine::backend::{Backend, BackendFuture, BackendStatus, Broadcast};
use crate::engine::fanout::Fanout;
use crate::engine::packet::Packet;
use crate::engine::rooms::Target;
use crate::error::BackendError;
use crate::session::Sid;

use super::bus;
use super::lease::{Keys, LeaseScript, Op, Reply, Timing, REGISTER_CHUNK};
use super::vouch::{hex, unhex};

/// The longest one Redis call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Broadcasts waiting to be published; past this, emits fail (and are
/// logged) rather than growing memory while Redis is away.
const OUTBOX: usize = 65_536;
/// Broadcasts published in one pipeline.
const PUBLISH_BATCH: usize = 256;

/// How to reach Redis and who this node is.
pub struct ClusterSettings {
    /// The Redis client (the URL is checked when this is made).
    client: redis::Client,
    /// The command connection; reconnects by itself.
    conn: ConnectionManager,
    /// This node's id, unique in the cluster.
    node: String,
    /// Where other nodes reach this one (`host:port`) to forward requests
    /// for its sessions.
    addr: String,
    /// The hash tag every key and channel carries: one cluster per tag.
    prefix: String,
    /// The latest-value event the app broadcasts the count under, which
    /// this backend then publishes itself, versioned.
    count_event: Option<Arc<str>>,
    people_event: Option<Arc<str>>,
    /// `pingInterval + pingTimeout`: how long a dead node's sessions may
    /// stay counted.
    bound: Duration,
}

impl ClusterSettings {
    /// Settings for `node` on the Redis at `url`, reachable by other nodes
    /// at `addr`, with dead nodes gone within `bound`. Must be called inside
    /// a tokio runtime. Fails on a bad URL or node id; does not connect yet.
    pub fn new(
        url: &str,
        node: &str,
        addr: &str,
        bound: Duration,
    ) -> Result<ClusterSettings, BackendError> {
        let valid = !node.is_empty()
            && node.len() <= 64
            && node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !valid {
            return Err(BackendError(format!(
                "node id {node:?} must be 1 to 64 of A-Z a-z 0-9 - _ ."
            )));
        }
        let client =
            redis::Client::open(url).map_err(|e| BackendError(format!("redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| BackendError(format!("redis: {e}")))?;
        Ok(ClusterSettings {
            client,
            conn,
            node: node.to_string(),
            addr: addr.to_string(),
            prefix: "ssio".to_string(),
            count_event: None,
            people_event: None,
            bound,
        })
    }

    /// Names the latest-value event that carries the count (the demo app's
    /// `user count`): the backend then publishes every newer count under it
    /// on this node, and the app's own emits of it are not sent to Redis.
    pub fn count_event(mut self, name: &str) -> ClusterSettings {
        self.count_event = Some(Arc::from(name));
        self
    }

    /// Names the latest-value event that carries the number of people (the
    /// demo app's `people count`): the backend then publishes it on this
    /// node from the same versioned state as the count, while it differs
    /// from the count and as `null` once when they agree again, and the
    /// app's own emits of it are not sent to Redis.
    pub fn people_event(mut self, name: &str) -> ClusterSettings {
        self.people_event = Some(Arc::from(name));
        self
    }

    /// The hash tag for this cluster's keys (default `ssio`), so that
    /// several clusters can share one Redis.
    pub fn prefix(mut self, prefix: &str) -> ClusterSettings {
        self.prefix = prefix.to_string();
        self
    }
}

/// The count and the node's view of it.
struct View {
    /// The Redis epoch this node registered under; empty until it has.
    epoch: String,
    /// The newest count this node has seen.
    count: u64,
    /// Its version.
    version: u64,
    /// People, as of the same version.
    users: u64,
    /// The people count last published under `people_event`: `None`
    /// while it agrees with the count (or before any).
    told: Option<u64>,
}

/// A broadcast waiting for its `PUBLISH`.
struct Outgoing {
    latest: bool,
    target: Target,
    name: Arc<str>,
    data: String,
}

/// A [`Backend`] over Redis; see the module docs.
pub struct RedisBackend {
    shared: Arc<Shared>,
}

impl RedisBackend {
    /// A leave (`Op::Leave`) or a going away (`Op::Away`, which keeps the
    /// session findable through the owners hash for a resume from any node).
    fn uncount(&self, sid: Sid, op: Op) -> BackendFuture<()> {
        let s = self.shared.clone();
        Box::pin(async move {
            let gate = s.gate.read().await;
            s.local.lock().remove(&sid);
            let epoch = s.view.lock().epoch.clone();
            if epoch.is_empty() || s.dirty.load(Ordering::SeqCst) {
                // The next registration replaces this node's sessions
                // wholesale, without this one.
                s.repair.notify_one();
                return Ok(());
            }
            match s.call(op, &epoch, &[(sid, None)]).await? {
                r if r.current => {
                    s.apply(r.count, r.users, r.version);
                    Ok(())
                }
                _ => {
                    drop(gate);
                    s.register().await
                }
            }
        })
    }
}

struct Shared {
    /// This node's id: the key of its lease and the prefix of its members.
    node: String,
    /// Where other nodes forward requests for this node's sessions.
    addr: String,
    /// This process's id on the events channel: the node id plus a per-boot
    /// id, so that a restarted node's sequence numbers start afresh.
    origin: String,
    /// Where this node's sessions read broadcasts.
    fanout: Fanout,
    client: redis::Client,
    conn: ConnectionManager,
    script: LeaseScript,
    timing: Timing,
    count_event: Option<Arc<str>>,
    people_event: Option<Arc<str>>,
    /// Updated only with a newer version, under this lock, which is also
    /// held while the count is published into the fan-out, so the fan-out
    /// sees versions in increasing order.
    view: Mutex<View>,
    /// This node's live sessions: what it registers again after Redis lost
    /// them.
    local: Mutex<HashMap<Sid, Option<Arc<str>>>>,
    /// The shared streams this node holds: what it records again after
    /// Redis lost them.
    streams: Mutex<HashSet<uuid::Uuid>>,
    /// The cluster's key for vouching for client addresses, as read at the
    /// last registration.
    key: Mutex<Option<[u8; 32]>>,
    /// Joins and leaves hold it shared; a registration holds it alone, so
    /// it never races a leave into counting an ended session.
    gate: RwLock<()>,
    /// A call failed, so Redis may disagree with `local`: register again.
    dirty: AtomicBool,
    /// The last Redis command succeeded.
    commands_up: AtomicBool,
    /// The subscription is connected and not silent.
    bus_up: AtomicBool,
    /// Subscriptions made again after one was lost, and registrations under
    /// a new epoch: each a reconnection to the shared state.
    reconnects: AtomicU64,
    /// When Redis last answered a call.
    last_ok: Mutex<Option<Instant>>,
    outbox: mpsc::Sender<Outgoing>,
    outbox_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// The last sequence number seen per origin, to drop duplicates.
    seen: Mutex<HashMap<String, u64>>,
    /// Asks the maintenance task to renew now (after a reconnect).
    repair: Notify,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl RedisBackend {
    /// A backend delivering into this node's `fanout`; connects on
    /// [`Backend::start`].
    pub fn new(fanout: Fanout, settings: ClusterSettings) -> RedisBackend {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let boot = uuid::Uuid::new_v4().simple().to_string();
        RedisBackend {
            shared: Arc::new(Shared {
                origin: format!("{}/{}", settings.node, &boot[..12]),
                node: settings.node,
                addr: settings.addr,
                fanout,
                client: settings.client,
                conn: settings.conn,
                script: LeaseScript::new(Keys::new(&settings.prefix)),
                timing: Timing::for_bound(settings.bound),
                count_event: settings.count_event,
                people_event: settings.people_event,
                view: Mutex::new(View {
                    epoch: String::new(),
                    count: 0,
                    version: 0,
                    users: 0,
                    told: None,
                }),
                local: Mutex::new(HashMap::new()),
                streams: Mutex::new(HashSet::new()),
                key: Mutex::new(None),
                gate: RwLock::new(()),
                dirty: AtomicBool::new(true),
                commands_up: AtomicBool::new(false),
                bus_up: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
                last_ok: Mutex::new(None),
                outbox: tx,
                outbox_rx: Mutex::new(Some(rx)),
                seen: Mutex::new(HashMap::new()),
                repair: Notify::new(),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }
}

/// 256 bits drawn from 366 of the system's generator (three v4 UUIDs).
fn fresh_key() -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for _ in 0..3 {
        h.update(uuid::Uuid::new_v4().as_bytes());
    }
    h.finalize().into()
}

fn done() -> BackendFuture<()> {
    Box::pin(std::future::ready(Ok(())))
}

impl Backend for RedisBackend {
    fn start(&self) -> BackendFuture<()> {
        let s = self.shared.clone();
        Box::pin(async move {
            if let Some(rx) = s.outbox_rx.lock().take() {
                s.tasks.spawn(s.clone().publish(rx));
                s.tasks.spawn(s.clone().listen());
                s.tasks.spawn(s.clone().maintain());
            }
            s.register().await
        })
    }

    fn join(&self, sid: Sid) -> BackendFuture<()> {
        self.join_as(sid, None)
    }

    fn join_as(&self, sid: Sid, person: Option<Arc<str>>) -> BackendFuture<()> {
        let s = self.shared.clone();
        Box::pin(async move {
            let gate = s.gate.read().await;
            s.local.lock().insert(sid, person.clone());
            let epoch = s.view.lock().epoch.clone();
            let joined = if epoch.is_empty() || s.dirty.load(Ordering::SeqCst) {
                drop(gate);
                s.register().await
            } else {
                match s.call(Op::Join, &epoch, &[(sid, person)]).await {
                    Ok(r) if r.current => {
                        s.apply(r.count, r.users, r.version);
                        Ok(())
                    }
                    Ok(_) => {
                        drop(gate);
                        s.register().await
                    }
                    Err(e) => Err(e),
                }
            };
            if joined.is_err() {
                s.local.lock().remove(&sid);
            }
            joined
        })
    }

    fn leave(&self, sid: Sid) -> BackendFuture<()> {
        self.uncount(sid, Op::Leave)
    }

    fn away(&self, sid: Sid) -> BackendFuture<()> {
        self.uncount(sid, Op::Away)
    }

    fn count(&self) -> usize {
        self.shared.view.lock().count as usize
    }

    fn users(&self) -> Option<usize> {
        Some(self.shared.view.lock().users as usize)
    }

    fn broadcast(&self, event: Broadcast) -> BackendFuture<()> {
        let s = &self.shared;
        let ours = [s.count_event.as_deref(), s.people_event.as_deref()];
        if event.latest && ours.contains(&Some(&*event.name)) {
            // This node already shows the newest versioned count; the app's
            // copy of it adds nothing and could be older.
            return done();
        }
        // This node's sessions get it now, in call order.
        if event.latest {
            s.fanout.publish_latest(&event.name, event.packet.clone());
        } else {
            s.fanout.publish_to(&event.target, event.packet.clone());
        }
        let Some(data) = bus::data_of(&event.packet, &event.name) else {
            return Box::pin(std::future::ready(Err(BackendError(
                "packet not in the expected form".into(),
            ))));
        };
        let out = Outgoing {
            latest: event.latest,
            target: event.target.clone(),
            name: event.name.clone(),
            data: data.to_string(),
        };
        // The order is fixed here, at the call: one task publishes the queue
        // in order.
        let sent = s
            .outbox
            .try_send(out)
            .map_err(|_| BackendError("broadcast queue full; not sent to other nodes".into()));
        Box::pin(std::future::ready(sent))
    }

    fn close(&self) -> BackendFuture<()> {
        let s = self.shared.clone();
        Box::pin(async move {
            s.stop.cancel();
            s.tasks.close();
            s.tasks.wait().await;
            let epoch = s.view.lock().epoch.clone();
            s.call(Op::Part, &epoch, &[]).await.map(|_| ())
        })
    }

    fn locate(&self, id: uuid::Uuid) -> BackendFuture<Option<String>> {
        let s = self.shared.clone();
        Box::pin(async move {
            let mut conn = s.conn.clone();
            let found = tokio::time::timeout(CALL_TIMEOUT, s.script.owner(&mut conn, id))
                .await
                .map_err(|_| BackendError("redis unreachable".into()))?
                .map_err(|e| BackendError(format!("redis: {e}")))?;
            Ok(found.and_then(|(node, addr)| (node != s.node).then_some(addr)))
        })
    }

    fn claim(&self, id: uuid::Uuid) -> BackendFuture<()> {
        let s = self.shared.clone();
        Box::pin(async move {
            let _gate = s.gate.read().await;
            // Kept even if Redis does not answer now: the next registration
            // records it.
            s.streams.lock().insert(id);
            let recorded = s.record_streams(&[id]).await;
            if recorded.is_err() {
                s.dirty.store(true, Ordering::SeqCst);
                s.repair.notify_one();
            }
            recorded
        })
    }

    fn unclaim(&self, id: uuid::Uuid) -> BackendFuture<()> {
        let s = self.shared.clone();
        Box::pin(async move {
            let _gate = s.gate.read().await;
            s.streams.lock().remove(&id);
            // A shared stream's id or an away session's sid: the owner
            // record goes, and its entry under this node (one of the two).
            let keys = s.script.keys();
            let entry = format!("{}|{id}", s.node);
            let mut pipe = redis::pipe();
            pipe.cmd("HDEL")
                .arg(&keys.owners)
                .arg(id.to_string())
                .ignore()
                .cmd("ZREM")
                .arg(&keys.away)
                .arg(&entry)
                .ignore()
                .cmd("ZREM")
                .arg(&keys.streams)
                .arg(&entry)
                .ignore();
            let mut conn = s.conn.clone();
            tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(&mut conn))
                .await
                .map_err(|_| BackendError("redis unreachable".into()))?
                .map_err(|e| BackendError(format!("redis: {e}")))?;
            Ok(())
        })
    }

    fn cluster_key(&self) -> Option<[u8; 32]> {
        *self.shared.key.lock()
    }

    fn nodes(&self) -> BackendFuture<Vec<(String, String)>> {
        let s = self.shared.clone();
        Box::pin(async move {
            let mut conn = s.conn.clone();
            tokio::time::timeout(CALL_TIMEOUT, s.script.nodes(&mut conn))
                .await
                .map_err(|_| BackendError("redis unreachable".into()))?
                .map_err(|e| BackendError(format!("redis: {e}")))
        })
    }

    fn status(&self) -> Option<BackendStatus> {
        let s = &self.shared;
        let connected = s.commands_up.load(Ordering::SeqCst)
            && s.bus_up.load(Ordering::SeqCst)
            && !s.dirty.load(Ordering::SeqCst)
            && !s.view.lock().epoch.is_empty();
        Some(BackendStatus {
            connected,
            reconnects: s.reconnects.load(Ordering::SeqCst),
            // The count is at most this old: the last time Redis answered.
            lag: s.last_ok.lock().map(|t| t.elapsed()),
        })
    }
}

impl Shared {
    /// One script call, bounded in time; records whether Redis answered.
    async fn call(
        &self,
        op: Op,
        epoch: &str,
        sids: &[(Sid, Option<Arc<str>>)],
    ) -> Result<Reply, BackendError> {
        let mut conn = self.conn.clone();
        let call = self.script.call(
            &mut conn,
            op,
            epoch,
            &self.node,
            &self.addr,
            self.timing.lease,
            sids,
        );
        let error = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(reply)) => {
                *self.last_ok.lock() = Some(Instant::now());
                if !self.commands_up.swap(true, Ordering::SeqCst) {
                    info!(node = %self.node, "redis reachable");
                }
                return Ok(reply);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        // It may or may not have run: only a registration can tell.
        self.dirty.store(true, Ordering::SeqCst);
        if self.commands_up.swap(false, Ordering::SeqCst) {
            warn!(node = %self.node, error,
                "redis unreachable: serving this node's sessions, \
                 refusing new ones, count frozen at its last value");
        } else {
            debug!(node = %self.node, error, "redis call failed");
        }
        // Clients see a fixed text: Redis's own errors name hosts and ports.
        Err(BackendError("redis unreachable".into()))
    }

    /// Shows `count` if `version` is newer than what this node shows.
    fn apply(&self, count: u64, users: u64, version: u64) {
        let mut view = self.view.lock();
        if version <= view.version {
            return;
        }
        view.count = count;
        view.users = users;
        view.version = version;
        if let Some(name) = &self.count_event {
            self.fanout
                .publish_latest(name, Packet::new(name, &Value::from(count)));
        }
        if let Some(name) = &self.people_event {
            // As the demo app tells it: only while people and sessions
            // differ, and `null` once when they agree again.
            let now = (users != count).then_some(users);
            if now != view.told {
                view.told = now;
                self.fanout
                    .publish_latest(name, Packet::new(name, &Value::from(now)));
            }
        }
    }

    /// Replaces this node's sessions in Redis with its live ones, adopting
    /// Redis's epoch (or creating one if Redis has none).
    async fn register(&self) -> Result<(), BackendError> {
        let _gate = self.gate.write().await;
        self.dirty.store(true, Ordering::SeqCst);
        let sids: Vec<(Sid, Option<Arc<str>>)> = self
            .local
            .lock()
            .iter()
            .map(|(s, p)| (*s, p.clone()))
            .collect();
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        let mut chunks = sids.chunks(REGISTER_CHUNK);
        let mut last = self
            .call(Op::Register, &fresh, chunks.next().unwrap_or(&[]))
            .await?;
        let epoch = last.epoch.clone();
        for chunk in chunks {
            last = self.call(Op::Join, &epoch, chunk).await?;
            if !last.current {
                return Err(BackendError("redis changed during registration".into()));
            }
        }
        // Records Redis lost with its data, or took away with a lapsed
        // lease: this node's shared streams, and the key.
        let streams: Vec<uuid::Uuid> = self.streams.lock().iter().copied().collect();
        for chunk in streams.chunks(REGISTER_CHUNK) {
            self.record_streams(chunk).await?;
        }
        self.agree_on_key().await?;
        let previous = std::mem::replace(&mut self.view.lock().epoch, epoch.clone());
        if previous != epoch {
            if !previous.is_empty() {
                self.reconnects.fetch_add(1, Ordering::SeqCst);
            }
            info!(node = %self.node, epoch, sessions = sids.len(),
                previous = if previous.is_empty() { "none" } else { previous.as_str() },
                "registered this node's sessions under a new redis epoch");
        }
        self.dirty.store(false, Ordering::SeqCst);
        self.apply(last.count, last.users, last.version);
        Ok(())
    }

    /// Records `ids` as shared streams this node holds: the owner record
    /// other nodes find them through, and the entry that makes the record
    /// go with this node's lease.
    async fn record_streams(&self, ids: &[uuid::Uuid]) -> Result<(), BackendError> {
        let keys = self.script.keys();
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HSET")
                .arg(&keys.owners)
                .arg(id.to_string())
                .arg(&self.node)
                .ignore()
                .cmd("ZADD")
                .arg(&keys.streams)
                .arg(0)
                .arg(format!("{}|{id}", self.node))
                .ignore();
        }
        let mut conn = self.conn.clone();
        tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| BackendError("redis unreachable".into()))?
            .map_err(|e| BackendError(format!("redis: {e}")))
    }

    /// Adopts the cluster's key for vouching for client addresses, setting
    /// it first if Redis has none. A node proposes the key it already
    /// holds, so after Redis lost its data the nodes put the same key back
    /// and the forwards between them keep their vouches.
    async fn agree_on_key(&self) -> Result<(), BackendError> {
        let mine = self.key.lock().unwrap_or_else(fresh_key);
        let keys = self.script.keys();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&keys.key)
            .arg(hex(&mine))
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&keys.key);
        let mut conn = self.conn.clone();
        let (held,): (Option<String>,) =
            tokio::time::timeout(CALL_TIMEOUT, pipe.query_async(&mut conn))
                .await
                .map_err(|_| BackendError("redis unreachable".into()))?
                .map_err(|e| BackendError(format!("redis: {e}")))?;
        let key = held
            .as_deref()
            .and_then(unhex)
            .ok_or_else(|| BackendError("the cluster key in redis is not 64 hex digits".into()))?;
        *self.key.lock() = Some(key);
        Ok(())
    }

    /// Renews the lease and re-reads the count; registers again when Redis
    /// lost this node's sessions.
    async fn renew(&self) {
        if self.dirty.load(Ordering::SeqCst) {
            let _ = self.register().await;
            return;
        }
        let reply = {
            let _gate = self.gate.read().await;
            let epoch = self.view.lock().epoch.clone();
            self.call(Op::Renew, &epoch, &[]).await
        };
        match reply {
            Ok(r) if r.current => {
                self.apply(r.count, r.users, r.version);
                // The key, read again: one deleted by hand is put back and
                // one replaced is adopted within a renewal, not only at
                // the next registration.
                if let Err(e) = self.agree_on_key().await {
                    debug!(error = %e, "cluster key not read");
                }
            }
            Ok(_) => {
                let _ = self.register().await;
            }
            Err(_) => {}
        }
    }

    /// Every renewal period: renew, and probe the subscription by
    /// publishing where only this node listens.
    async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.timing.renew);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let probe = self.script.keys().probe_channel(&self.node);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.repair.notified() => {}
                _ = self.stop.cancelled() => return,
            }
            self.renew().await;
            let mut conn = self.conn.clone();
            let mut ping = redis::cmd("PUBLISH");
            ping.arg(&probe).arg("probe");
            let _ = tokio::time::timeout(CALL_TIMEOUT, ping.query_async::<i64>(&mut conn)).await;
        }
    }

    /// Publishes queued broadcasts in order, a pipeline at a time.
    async fn publish(self: Arc<Self>, mut rx: mpsc::Receiver<Outgoing>) {
        let channel = self.script.keys().events_channel.clone();
        let mut seq = 0u64;
        let mut sent_upto = 0u64;
        // Broadcasts not sent since publishing started failing.
        let mut lost = 0u64;
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        loop {
            let stopping = tokio::select! {
                n = rx.recv_many(&mut batch, PUBLISH_BATCH) => n == 0,
                _ = self.stop.cancelled() => {
                    while let Ok(o) = rx.try_recv() {
                        batch.push(o);
                    }
                    true
                }
            };
            if !batch.is_empty() {
                let mut pipe = redis::pipe();
                for o in batch.drain(..) {
                    seq += 1;
                    let wire =
                        bus::encode(&self.origin, seq, o.latest, &o.target, &o.name, &o.data);
                    pipe.cmd("PUBLISH")
                        .arg(&channel)
                        .arg(wire.as_ref())
                        .ignore();
                }
                let n = seq - sent_upto;
                sent_upto = seq;
                let mut conn = self.conn.clone();
                let sent = tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(&mut conn));
                let error = match sent.await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("timed out".to_string()),
                };
                // One line when it starts failing and one when it recovers,
                // not one per batch.
                match (error, lost) {
                    (None, 0) => {}
                    (None, _) => {
                        info!(lost, "broadcasts reach other nodes again");
                        lost = 0;
                    }
                    (Some(error), 0) => {
                        warn!(error, "broadcasts not sent to other nodes");
                        lost = n;
                    }
                    (Some(_), _) => lost += n,
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// Keeps one subscription alive: connects, subscribes, reads until it
    /// closes or falls silent, and starts over.
    async fn listen(self: Arc<Self>) {
        let keys = self.script.keys().clone();
        let channels = [
            keys.events_channel.clone(),
            keys.count_channel.clone(),
            keys.probe_channel(&self.node),
        ];
        let mut backoff = Duration::from_millis(50);
        let mut first = true;
        loop {
            let connect = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(&channels).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            match tokio::time::timeout(CALL_TIMEOUT, connect).await {
                Ok(Ok(ps)) => {
                    backoff = Duration::from_millis(50);
                    if !std::mem::take(&mut first) {
                        self.reconnects.fetch_add(1, Ordering::SeqCst);
                    }
                    self.bus_up.store(true, Ordering::SeqCst);
                    info!(node = %self.node, "subscribed");
                    // Anything announced while we were away is read back now.
                    self.repair.notify_one();
                    self.read(ps, &keys).await;
                    self.bus_up.store(false, Ordering::SeqCst);
                }
                Ok(Err(e)) => debug!(error = %e, "subscribe failed"),
                Err(_) => debug!("subscribe timed out"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(self.timing.renew);
        }
    }

    /// Reads one subscription until it ends, falls silent, or the node stops.
    async fn read(&self, ps: redis::aio::PubSub, keys: &Keys) {
        let mut stream = ps.into_on_message();
        let mut heard = Instant::now();
        let mut check = tokio::time::interval(self.timing.renew);
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        heard = Instant::now();
                        self.on_message(msg.get_channel_name(), msg.get_payload_bytes(), keys);
                    }
                    None => {
                        warn!(node = %self.node, "subscription closed; resubscribing");
                        return;
                    }
                },
                _ = check.tick() => if heard.elapsed() > self.timing.silence {
                    warn!(node = %self.node, "subscription silent, probes lost; resubscribing");
                    return;
                },
                _ = self.stop.cancelled() => return,
            }
        }
    }

    fn on_message(&self, channel: &str, payload: &[u8], keys: &Keys) {
        if channel == keys.count_channel {
            if let Some((version, count, users)) = bus::decode_count(payload) {
                self.apply(count, users, version);
            }
        } else if channel == keys.events_channel {
            let Some(wire) = bus::decode(payload) else {
                debug!("malformed broadcast dropped");
                return;
            };
            if wire.origin == self.origin {
                return;
            }
            {
                let mut seen = self.seen.lock();
                let last = seen.entry(wire.origin.clone()).or_insert(0);
                if wire.seq <= *last {
                    return;
                }
                if *last != 0 && wire.seq > *last + 1 {
                    warn!(origin = %wire.origin, lost = wire.seq - *last - 1,
                        "broadcasts from another node were lost in transit");
                }
                *last = wire.seq;
            }
            let packet = wire.packet();
            if wire.latest {
                self.fanout.publish_latest(&wire.name, packet);
            } else {
                self.fanout.publish_to(&wire.target, packet);
            }
        }
    }
}
