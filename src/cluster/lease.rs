//! The count's one script and the timing of the leases it keeps.
//!
//! Every change to the set of live sessions runs `lease.lua` in Redis, which
//! decides the change, the new count and its version atomically, with time
//! taken from Redis (`TIME`), never from a node's clock. A node holds a lease
//! on its sessions and renews it; a node that dies stops renewing, and the
//! next call from any node removes its sessions. Every key carries the same
//! hash tag, so the script runs unchanged on Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

use crate::session::Sid;

/// What a call asks of the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Replace this node's sessions with the given ones (creating the epoch
    /// if Redis has none).
    Register,
    /// Add sessions.
    Join,
    /// Remove sessions.
    Leave,
    /// Remove sessions from the count but keep their owner record: they
    /// are away, and a resume through any node must still find them.
    Away,
    /// Renew the lease; read the newest count.
    Renew,
    /// Remove this node and all its sessions (clean shutdown).
    Part,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Register => "register",
            Op::Join => "join",
            Op::Leave => "leave",
            Op::Away => "away",
            Op::Renew => "renew",
            Op::Part => "part",
        }
    }
}

/// The script's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// False when the node must register all its sessions again: Redis has
    /// another epoch (it lost its data) or this node's lease lapsed.
    pub(crate) current: bool,
    /// The epoch Redis holds now ("" if none).
    pub(crate) epoch: String,
    /// Live sessions in the cluster.
    pub(crate) count: u64,
    /// The count's version; only a newer one may replace a shown count.
    pub(crate) version: u64,
    /// People in the cluster: the sessions of one user id or one browser
    /// count once.
    pub(crate) users: u64,
}

/// Key names, all under one hash tag.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    epoch: String,
    version: String,
    members: String,
    nodes: String,
    pub(crate) owners: String,
    addrs: String,
    /// `"node|sid"` of every away session, so that a dead node's away
    /// sessions' owner records go with it.
    pub(crate) away: String,
    /// `"node|id"` of every shared stream, so that a dead node's stream
    /// records go with it.
    pub(crate) streams: String,
    /// Person -> its live sessions, for sessions that share a person.
    persons: String,
    /// Sid -> person, for those sessions.
    who: String,
    /// How many live sessions have a person.
    keyed: String,
    /// The random key the nodes vouch for client addresses with: the first
    /// node to register sets it, every node reads it.
    pub(crate) key: String,
    /// Where every change announces `"<version> <count>"`.
    pub(crate) count_channel: String,
    /// Where every broadcast goes, once per emit.
    pub(crate) events_channel: String,
}

impl Keys {
    /// Keys for the cluster named `prefix` (the hash tag's content).
    pub(crate) fn new(prefix: &str) -> Keys {
        let tag = format!("{{{prefix}}}");
        Keys {
            epoch: format!("{tag}:epoch"),
            version: format!("{tag}:version"),
            members: format!("{tag}:members"),
            nodes: format!("{tag}:nodes"),
            owners: format!("{tag}:owners"),
            addrs: format!("{tag}:addrs"),
            away: format!("{tag}:away"),
            persons: format!("{tag}:persons"),
            who: format!("{tag}:who"),
            keyed: format!("{tag}:keyed"),
            streams: format!("{tag}:streams"),
            key: format!("{tag}:key"),
            count_channel: format!("{tag}:count"),
            events_channel: format!("{tag}:events"),
        }
    }

    /// This node's probe channel: the node publishes on it and expects to
    /// hear itself through its own subscription.
    pub(crate) fn probe_channel(&self, node: &str) -> String {
        format!(
            "{}:probe:{node}",
            &self.nodes[..self.nodes.len() - ":nodes".len()]
        )
    }
}

/// The lease script, loaded once per process; `invoke` uses `EVALSHA` and
/// falls back to `EVAL` when Redis lost its script cache (a restart).
pub(crate) struct LeaseScript {
    script: Script,
    owner: Script,
    /// Lists the live nodes (`nodes.lua`), for the server API's info.
    nodes: Script,
    keys: Keys,
}

/// Sessions per call when a node registers many at once, so that one call
/// never blocks Redis for long.
pub(crate) const REGISTER_CHUNK: usize = 1000;

impl LeaseScript {
    pub(crate) fn new(keys: Keys) -> LeaseScript {
        LeaseScript {
            script: Script::new(include_str!("lease.lua")),
            owner: Script::new(include_str!("owner.lua")),
            nodes: Script::new(include_str!("nodes.lua")),
            keys,
        }
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Runs `op` for `node` (reachable at `addr`) with `sids`, each with
    /// the person it belongs to when that is shared (read on a join).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn call(
        &self,
        conn: &mut ConnectionManager,
        op: Op,
        epoch: &str,
        node: &str,
        addr: &str,
        lease: Duration,
        sids: &[(Sid, Option<Arc<str>>)],
    ) -> redis::RedisResult<Reply> {
        let mut inv = self.script.prepare_invoke();
        inv.key(&self.keys.epoch)
            .key(&self.keys.version)
            .key(&self.keys.members)
            .key(&self.keys.nodes)
            .key(&self.keys.owners)
            .key(&self.keys.addrs)
            .key(&self.keys.away)
            .key(&self.keys.streams)
            .key(&self.keys.persons)
            .key(&self.keys.who)
            .key(&self.keys.keyed)
            .arg(op.as_str())
            .arg(epoch)
            .arg(node)
            .arg(lease.as_millis() as u64)
            .arg(&self.keys.count_channel)
            .arg(addr);
        let mut buf = uuid::Uuid::encode_buffer();
        for (sid, person) in sids {
            let sid = &*sid.hyphenated().encode_lower(&mut buf);
            match person {
                Some(person) => inv.arg(format!("{sid}|{person}")),
                None => inv.arg(sid),
            };
        }
        let (status, epoch, count, version, users): (String, String, u64, u64, u64) =
            inv.invoke_async(conn).await?;
        Ok(Reply {
            current: status == "ok",
            epoch,
            count,
            version,
            users,
        })
    }
}

impl LeaseScript {
    /// The node holding `id` (a session's or a shared stream's) and its
    /// address, if a live node holds it.
    pub(crate) async fn owner(
        &self,
        conn: &mut ConnectionManager,
        id: uuid::Uuid,
    ) -> redis::RedisResult<Option<(String, String)>> {
        let mut buf = uuid::Uuid::encode_buffer();
        self.owner
            .key(&self.keys.owners)
            .key(&self.keys.addrs)
            .arg(&*id.hyphenated().encode_lower(&mut buf))
            .invoke_async(conn)
            .await
    }
}

impl LeaseScript {
    /// Every node whose lease is live, with its address, sorted by node.
    pub(crate) async fn nodes(
        &self,
        conn: &mut ConnectionManager,
    ) -> redis::RedisResult<Vec<(String, String)>> {
        let flat: Vec<String> = self
            .nodes
            .key(&self.keys.nodes)
            .key(&self.keys.addrs)
            .invoke_async(conn)
            .await?;
        Ok(flat
            .chunks_exact(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect())
    }
}

/// How often a node renews its lease and how long the lease lasts, derived
/// from the heartbeat bound `pingInterval + pingTimeout`: a node killed
/// right after a renewal has its sessions removed by the next renewal of
/// another node after its lease ran out, so within `lease + renew`, which is
/// 2/3 of the bound, leaving the rest for a busy machine and for the
/// announcement to travel. A lease outlives two lost renewals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// Between two renewals (and two re-reads of the count, and two probes
    /// of the subscription).
    pub(crate) renew: Duration,
    /// How long sessions live without a renewal.
    pub(crate) lease: Duration,
    /// A subscription that heard nothing, not even its own probe, for this
    /// long is dead and is replaced.
    pub(crate) silence: Duration,
}

impl Timing {
    /// The timing for a heartbeat bound of `bound`.
    pub(crate) fn for_bound(bound: Duration) -> Timing {
        let renew = (bound / 6).max(Duration::from_millis(20));
        Timing {
            renew,
            lease: renew * 3,
            silence: renew * 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_node_leaves_within_the_heartbeat_bound() {
        for ms in [200, 2_000, 45_000] {
            let bound = Duration::from_millis(ms);
            let t = Timing::for_bound(bound);
            assert!(t.lease + t.renew < bound, "{t:?} for {bound:?}");
            assert!(t.lease >= t.renew * 3, "a lease survives two lost renewals");
        }
    }

    #[test]
    fn every_key_carries_the_same_hash_tag() {
        let k = Keys::new("ssio");
        for key in [
            &k.epoch, &k.version, &k.members, &k.nodes, &k.owners, &k.addrs, &k.away, &k.streams,
            &k.key,
        ] {
            assert!(key.starts_with("{ssio}:"), "{key}");
        }
        assert_eq!(k.probe_channel("n1"), "{ssio}:probe:n1");
    }
}
