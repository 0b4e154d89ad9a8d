//! The hub's three tables: published updates (`hub_events`, the history
//! subscribers replay from), the lease that says which worker of a server
//! hosts its hub (`hub_leases`), and who is subscribed now
//! (`hub_subscribers`, for presence). Every function runs inside the
//! caller's transaction.

use crate::clock::Millis;
use crate::db::{args, Row, Tx};
use crate::error::{invalid, Error, Result};
use serde_json::Value;

/// Most topics one update or one subscription names.
pub const MAX_TOPICS: usize = 64;
/// Longest topic or selector, in bytes.
pub const MAX_TOPIC_LEN: usize = 2048;
/// Longest event id or type, in bytes.
pub const MAX_ID_LEN: usize = 255;

/// An update to publish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// The topics it is published on; the first is its canonical topic.
    pub topics: Vec<String>,
    /// Its data (any text, newlines included).
    pub data: String,
    /// Whether only subscribers whose token allows one of its topics get it.
    pub private: bool,
    /// Its id; `None` means a fresh `urn:uuid:…`.
    pub id: Option<String>,
    /// The SSE event type, if any.
    pub kind: Option<String>,
    /// The reconnection time the SSE `retry:` field tells clients, in ms.
    pub retry: Option<i64>,
}

impl Update {
    /// Refuses an update the hub could not deliver as given
    /// (`InvalidTask`); `max_data` is the `hub_max_event_size` setting.
    pub fn check(&self, max_data: usize) -> Result<()> {
        if self.topics.is_empty() {
            return Err(invalid!("an update needs at least one topic"));
        }
        if self.topics.len() > MAX_TOPICS {
            return Err(Error::InvalidTask(format!(
                "an update names at most {MAX_TOPICS} topics, got {}",
                self.topics.len()
            )));
        }
        for t in &self.topics {
            if t.is_empty() || t.len() > MAX_TOPIC_LEN {
                return Err(Error::InvalidTask(format!(
                    "a topic must be 1 to {MAX_TOPIC_LEN} bytes long, got {} bytes",
                    t.len()
                )));
            }
        }
        if self.data.len() > max_data {
            return Err(Error::InvalidTask(format!(
                "an update's data is at most {max_data} bytes (hub_max_event_size), got {}",
                self.data.len()
            )));
        }
        for (what, v) in [("id", &self.id), ("type", &self.kind)] {
            if let Some(v) = v {
                if v.is_empty() || v.len() > MAX_ID_LEN || v.contains(['\r', '\n']) {
                    return Err(Error::InvalidTask(format!(
                        "option '{what}' must be 1 to {MAX_ID_LEN} bytes on one line"
                    )));
                }
            }
        }
        if self.retry.is_some_and(|r| r < 0) {
            return Err(Error::InvalidTask(
                "option 'retry' must be a number of milliseconds, 0 or more".into(),
            ));
        }
        Ok(())
    }
}

/// A stored update, in publication order.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its place in publication order.
    pub seq: i64,
    /// Its id (the SSE `id:`).
    pub id: String,
    /// Its topics.
    pub topics: Vec<String>,
    /// Its data.
    pub data: String,
    /// Whether it is private.
    pub private: bool,
    /// Its SSE event type.
    pub kind: Option<String>,
    /// Its SSE `retry:`, in ms.
    pub retry: Option<i64>,
}

/// Stores `update` for `site`; returns its id. A given id already used is refused.
pub(crate) fn insert(tx: &mut dyn Tx, site: &str, update: &Update, now: Millis) -> Result<String> {
    // Publishers take turns, so that the order of `seq` is the order of
    // commits and a reader never passes an update that commits later.
    tx.lock_named("hub events")?;
    let id = match &update.id {
        Some(id) => {
            if tx
                .int(
                    "SELECT 1 FROM hub_events WHERE site = ?1 AND id = ?2",
                    args![site, id],
                )?
                .is_some()
            {
                return Err(Error::InvalidTask(format!(
                    "an update with id '{}' was published already",
                    id.escape_default()
                )));
            }
            id.clone()
        }
        None => crate::id::urn_uuid(),
    };
    let topics = serde_json::to_string(&update.topics).expect("strings serialise");
    tx.execute(
        "INSERT INTO hub_events (site, id, topics, data, private, type, retry, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        args![
            site,
            &id,
            &topics,
            &update.data,
            update.private,
            update.kind.as_deref(),
            update.retry,
            now
        ],
    )?;
    Ok(id)
}

fn event(mut r: Row) -> Result<Event> {
    let topics = r.text(2)?;
    Ok(Event {
        seq: r.int(0)?,
        id: r.text(1)?,
        topics: serde_json::from_str(&topics).unwrap_or_default(),
        data: r.text(3)?,
        private: r.int(4)? != 0,
        kind: r.opt_text(5)?,
        retry: r.opt_int(6)?,
    })
}

/// `site`'s updates published after `seq`, oldest first, at most `limit`.
pub(crate) fn after(tx: &mut dyn Tx, site: &str, seq: i64, limit: i64) -> Result<Vec<Event>> {
    tx.query(
        "SELECT seq, id, topics, data, private, type, retry FROM hub_events \
         WHERE site = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        args![site, seq, limit],
    )?
    .into_iter()
    .map(event)
    .collect()
}

/// The place of update `id` in `site`'s history, if it is still kept.
pub(crate) fn seq_of(tx: &mut dyn Tx, site: &str, id: &str) -> Result<Option<i64>> {
    tx.int(
        "SELECT seq FROM hub_events WHERE site = ?1 AND id = ?2",
        args![site, id],
    )
}

/// The place of `site`'s latest update (0 when there is none).
pub(crate) fn last_seq(tx: &mut dyn Tx, site: &str) -> Result<i64> {
    Ok(tx
        .int(
            "SELECT max(seq) FROM hub_events WHERE site = ?1",
            args![site],
        )?
        .unwrap_or(0))
}

/// The id of `site`'s latest update, if any.
pub(crate) fn last_id(tx: &mut dyn Tx, site: &str) -> Result<Option<String>> {
    tx.text(
        "SELECT id FROM hub_events WHERE site = ?1 ORDER BY seq DESC LIMIT 1",
        args![site],
    )
}

/// Deletes `site`'s updates published before `before`.
pub(crate) fn prune(tx: &mut dyn Tx, site: &str, before: Millis) -> Result<usize> {
    tx.execute(
        "DELETE FROM hub_events WHERE site = ?1 AND created_at < ?2",
        args![site, before],
    )
}

/// Takes or renews the hub lease of `server` for `holder` until `until`;
/// true when `holder` holds it now. Another holder's lease is taken only
/// once it ended (before `now`).
pub(crate) fn hold_lease(
    tx: &mut dyn Tx,
    site: &str,
    server: &str,
    holder: &str,
    listen: &str,
    now: Millis,
    until: Millis,
) -> Result<bool> {
    let changed = tx.execute(
        "INSERT INTO hub_leases (site, server, holder, listen, until_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (site, server) DO UPDATE SET holder = excluded.holder, \
             listen = excluded.listen, until_at = excluded.until_at \
         WHERE hub_leases.holder = excluded.holder OR hub_leases.until_at < ?6",
        args![site, server, holder, listen, until, now],
    )?;
    Ok(changed == 1)
}

/// The hub lease of `server`, if any: its holder and when it ends.
pub(crate) fn lease(tx: &mut dyn Tx, site: &str, server: &str) -> Result<Option<(String, Millis)>> {
    match tx.row(
        "SELECT holder, until_at FROM hub_leases WHERE site = ?1 AND server = ?2",
        args![site, server],
    )? {
        Some(mut r) => Ok(Some((r.text(0)?, r.int(1)?))),
        None => Ok(None),
    }
}

/// The `meta` key under which `site`'s `server` keeps why its hub last
/// failed to listen.
fn listen_error_key(site: &str, server: &str) -> String {
    format!("hub listen error\n{site}\n{server}")
}

/// Why the hub of `site`'s `server` last failed to listen, if it has not
/// listened since.
pub(crate) fn listen_error(tx: &mut dyn Tx, site: &str, server: &str) -> Result<Option<String>> {
    crate::meta::get(tx, &listen_error_key(site, server))
}

/// Records why the hub of `site`'s `server` failed to listen (`Some`), or
/// that it listens (`None`).
pub(crate) fn set_listen_error(
    tx: &mut dyn Tx,
    site: &str,
    server: &str,
    error: Option<&str>,
) -> Result<()> {
    let key = listen_error_key(site, server);
    match error {
        Some(e) => crate::meta::set(tx, &key, e),
        None => crate::meta::delete(tx, &key),
    }
}

/// How many subscriptions and kept updates `site` has.
pub(crate) fn counts(tx: &mut dyn Tx, site: &str) -> Result<(i64, i64)> {
    let subscriptions = tx
        .int(
            "SELECT count(*) FROM hub_subscribers WHERE site = ?1",
            args![site],
        )?
        .unwrap_or(0);
    let updates = tx
        .int(
            "SELECT count(*) FROM hub_events WHERE site = ?1",
            args![site],
        )?
        .unwrap_or(0);
    Ok((subscriptions, updates))
}

/// Ends `holder`'s hub lease of `server`, if it holds it.
pub(crate) fn release_lease(tx: &mut dyn Tx, site: &str, server: &str, holder: &str) -> Result<()> {
    tx.execute(
        "DELETE FROM hub_leases WHERE site = ?1 AND server = ?2 AND holder = ?3",
        args![site, server, holder],
    )?;
    Ok(())
}

/// One subscriber's subscription to one topic selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// The subscriber's id (`urn:uuid:…`, one per connection).
    pub subscriber: String,
    /// The topic selector subscribed to.
    pub topic: String,
    /// The payload its token carried (JSON `null` if none).
    pub payload: Value,
    /// When it subscribed.
    pub since: Millis,
}

impl Subscription {
    /// Its id in the subscriptions API.
    pub fn path(&self) -> String {
        format!(
            "/.well-known/mercure/subscriptions/{}/{}",
            encode(&self.topic),
            encode(&self.subscriber)
        )
    }

    /// Its JSON-LD form (the subscriptions API, and subscription events).
    pub fn json(&self, active: bool) -> Value {
        serde_json::json!({
            "id": self.path(),
            "type": "Subscription",
            "topic": self.topic,
            "subscriber": self.subscriber,
            "active": active,
            "payload": self.payload,
        })
    }
}

/// Percent-encodes every byte but unreserved ones (RFC 3986).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Records `s` as a subscription served by `holder` on `server`.
pub(crate) fn add_subscription(
    tx: &mut dyn Tx,
    site: &str,
    server: &str,
    holder: &str,
    s: &Subscription,
) -> Result<()> {
    tx.execute(
        "INSERT INTO hub_subscribers (site, server, holder, subscriber, topic, payload, since_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (site, subscriber, topic) DO NOTHING",
        args![
            site,
            server,
            holder,
            &s.subscriber,
            &s.topic,
            &s.payload.to_string(),
            s.since
        ],
    )?;
    Ok(())
}

/// Deletes a subscriber's subscriptions.
pub(crate) fn remove_subscriber(tx: &mut dyn Tx, site: &str, subscriber: &str) -> Result<()> {
    tx.execute(
        "DELETE FROM hub_subscribers WHERE site = ?1 AND subscriber = ?2",
        args![site, subscriber],
    )?;
    Ok(())
}

fn subscription(mut r: Row) -> Result<Subscription> {
    let payload = r.text(2)?;
    Ok(Subscription {
        subscriber: r.text(0)?,
        topic: r.text(1)?,
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        since: r.int(3)?,
    })
}

/// `site`'s subscriptions, to `topic` only if given, oldest first.
/// Only those of a hub that still holds its lease at `now`: a host that died
/// with its connections leaves rows behind until another host clears them.
pub(crate) fn subscriptions(
    tx: &mut dyn Tx,
    site: &str,
    topic: Option<&str>,
    now: Millis,
) -> Result<Vec<Subscription>> {
    const SELECT: &str =
        "SELECT s.subscriber, s.topic, s.payload, s.since_at FROM hub_subscribers s \
         JOIN hub_leases l ON l.site = s.site AND l.server = s.server AND l.holder = s.holder \
         WHERE s.site = ?1 AND l.until_at >= ?2";
    const ORDER: &str = " ORDER BY s.since_at, s.subscriber, s.topic";
    let rows = match topic {
        Some(t) => tx.query(
            &format!("{SELECT} AND s.topic = ?3{ORDER}"),
            args![site, now, t],
        )?,
        None => tx.query(&format!("{SELECT}{ORDER}"), args![site, now])?,
    };
    rows.into_iter().map(subscription).collect()
}

/// Takes out the subscriptions `server`'s earlier hubs left (their worker
/// died with its connections): they are over.
pub(crate) fn take_stale_subscriptions(
    tx: &mut dyn Tx,
    site: &str,
    server: &str,
    holder: &str,
) -> Result<Vec<Subscription>> {
    let stale = tx
        .query(
            "SELECT subscriber, topic, payload, since_at FROM hub_subscribers \
             WHERE site = ?1 AND server = ?2 AND holder <> ?3",
            args![site, server, holder],
        )?
        .into_iter()
        .map(subscription)
        .collect::<Result<Vec<_>>>()?;
    tx.execute(
        "DELETE FROM hub_subscribers WHERE site = ?1 AND server = ?2 AND holder <> ?3",
        args![site, server, holder],
    )?;
    Ok(stale)
}
