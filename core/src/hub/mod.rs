//! Live events to browsers with no daemon: a Mercure-compatible hub that
//! one persistent PHP worker of each server hosts on its sender runtime,
//! chosen with a lease in the shared database (docs/architecture.md,
//! "Live events"). Pages publish with one insert and a nudge; the hub reads
//! new updates in publication order and fans them out as Server-Sent Events.

pub(crate) mod host;
pub mod jwt;
mod server;
pub mod tables;
pub mod topics;

use crate::clock::Millis;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::settings::Settings;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{SocketAddr, UdpSocket};
use std::sync::OnceLock;
use tables::{Subscription, Update};

/// How long a hub lease lasts; a dead host's hub moves within this (plus
/// one poll of the sender).
pub const LEASE_MS: Millis = 3_000;

/// Longest lifetime `subscriber_token()` gives a token, in seconds.
pub const MAX_TOKEN_TTL: i64 = 366 * 86_400;

/// The state of this server's hub, for `stats()` and the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct HubStatus {
    /// The `hub_listen` setting.
    pub listen: SocketAddr,
    /// The process id of the worker hosting it, if one holds a live lease.
    pub host_pid: Option<u32>,
    /// Why a worker last failed to start the hub (the port taken, no right
    /// to bind it), until one starts it again.
    pub listen_error: Option<String>,
    /// Subscriptions on this site's hubs now.
    pub subscriptions: i64,
    /// Updates kept for replay.
    pub updates_kept: i64,
}

impl Engine {
    /// This server's hub: who hosts it and what it holds; `None` when
    /// `hub_listen` is unset.
    pub fn hub_status(&mut self, settings: &Settings, now: Millis) -> Result<Option<HubStatus>> {
        let Some(listen) = settings.hub_listen else {
            return Ok(None);
        };
        let (site, server) = (settings.site_name(), settings.server_name());
        let (lease, listen_error, (subscriptions, updates_kept)) = self.store().read(|tx| {
            Ok((
                tables::lease(tx, site, server)?,
                tables::listen_error(tx, site, server)?,
                tables::counts(tx, site)?,
            ))
        })?;
        let host_pid = lease
            .filter(|(_, until)| *until >= now)
            .and_then(|(holder, _)| holder.split(':').next()?.parse().ok());
        Ok(Some(HubStatus {
            listen,
            host_pid,
            listen_error,
            subscriptions,
            updates_kept,
        }))
    }

    /// Publishes `update` on this site's hub: stores it (one insert) and
    /// nudges this server's hub, without waiting for it. Returns its id.
    pub fn publish(&mut self, settings: &Settings, update: &Update, now: Millis) -> Result<String> {
        update.check(settings.hub_max_event_size)?;
        let site = settings.site_name();
        let id = self
            .store()
            .write(|tx| tables::insert(tx, site, update, now))?;
        if let Some(addr) = settings.hub_listen {
            nudge(addr);
        }
        Ok(id)
    }

    /// Who is subscribed to `topic` (the selector they asked for) now, on
    /// any server of this site.
    pub fn subscribers(
        &mut self,
        settings: &Settings,
        topic: &str,
        now: Millis,
    ) -> Result<Vec<Subscription>> {
        let site = settings.site_name();
        self.store()
            .read(|tx| tables::subscriptions(tx, site, Some(topic), now))
    }

    /// The key of the hub's HS256 tokens: the `hub_jwt_key` setting, else
    /// one derived from the engine's secret.
    pub fn hub_key(&mut self, settings: &Settings) -> Result<Vec<u8>> {
        if let Some(k) = &settings.hub_jwt_key {
            return Ok(k.as_bytes().to_vec());
        }
        let secret = self.secret(settings.secret.as_deref())?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret).expect("HMAC takes any key length");
        mac.update(b"async-engine hub jwt key");
        Ok(crate::id::hex(&mac.finalize().into_bytes()).into_bytes())
    }

    /// A subscriber token for `topics`, carrying `payload` (presence), valid
    /// for `ttl` seconds from `now`.
    pub fn subscriber_token(
        &mut self,
        settings: &Settings,
        topics: &[String],
        payload: serde_json::Value,
        ttl: i64,
        now: Millis,
    ) -> Result<String> {
        if !(1..=MAX_TOKEN_TTL).contains(&ttl) {
            return Err(Error::InvalidTask(format!(
                "a token's ttl must be 1 to {MAX_TOKEN_TTL} seconds, got {ttl}"
            )));
        }
        if topics.len() > tables::MAX_TOPICS
            || topics
                .iter()
                .any(|t| t.is_empty() || t.len() > tables::MAX_TOPIC_LEN)
        {
            return Err(Error::InvalidTask(format!(
                "a token names at most {} topics of 1 to {} bytes",
                tables::MAX_TOPICS,
                tables::MAX_TOPIC_LEN
            )));
        }
        let key = self.hub_key(settings)?;
        let claims = jwt::Claims {
            subscribe: topics.to_vec(),
            publish: Vec::new(),
            payload,
        };
        Ok(jwt::sign(&key, &claims, now.div_euclid(1000) + ttl))
    }
}

/// Tells the hub at `addr` that there is something new (one UDP datagram;
/// lost or unheard, the hub still reads within its poll).
fn nudge(addr: SocketAddr) {
    static V4: OnceLock<Option<UdpSocket>> = OnceLock::new();
    static V6: OnceLock<Option<UdpSocket>> = OnceLock::new();
    let (cell, any) = if addr.is_ipv4() {
        (&V4, "0.0.0.0:0")
    } else {
        (&V6, "[::]:0")
    };
    let socket = cell.get_or_init(|| {
        let s = UdpSocket::bind(any).ok()?;
        s.set_nonblocking(true).ok()?;
        Some(s)
    });
    if let Some(s) = socket {
        let _ = s.send_to(b"!", addr);
    }
}
