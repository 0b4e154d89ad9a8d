//! Which worker hosts the hub: every persistent worker's sender checks the
//! hub lease of its server at each poll; the one that holds it listens on
//! `hub_listen` and renews it, and when it dies (killed, recycled) another
//! takes the lease once it ends and listens in its place.

use super::server::{close, presence_update, Hub};
use super::tables;
use super::LEASE_MS;
use crate::clock::{now_ms, Millis};
use crate::settings::Settings;
use crate::shared_engine::{engine_call, SharedEngine};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A held lease is renewed once it has less than this left.
const RENEW_BELOW_MS: Millis = LEASE_MS - 1_000;
/// After failing to listen, a worker leaves the lease to others this long,
/// doubled after each further failure up to [`RETRY_LISTEN_MAX_MS`]: a port
/// held for a moment (a dying host not yet gone) costs a second, one taken
/// by another program two tries a minute per worker.
const RETRY_LISTEN_FIRST_MS: Millis = 1_000;
/// The longest a worker waits before trying to listen again.
const RETRY_LISTEN_MAX_MS: Millis = 30_000;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A hub this process hosts.
struct Hosted {
    holder: String,
    /// The settings it was started with (its database), to release the lease.
    settings: Settings,
    until: Millis,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// One hub per database, site, server and address.
type Key = (Option<String>, String, String, SocketAddr);

/// Where a worker failed to listen: since when it waits, and how long.
struct Failed {
    at: Millis,
    wait: Millis,
}

/// The hubs this process hosts, and where it recently failed to listen.
#[derive(Default)]
pub(crate) struct Hosting {
    hubs: HashMap<Key, Hosted>,
    failed: HashMap<Key, Failed>,
    /// Set by [`Hosting::stop_all`]: the process is exiting and hosts no
    /// hub again (a poll meanwhile would take the lease it just released).
    stopped: bool,
}

impl Hosting {
    /// Takes, renews or gives up the hub lease of `settings`' server; starts
    /// or stops its hub accordingly. Nothing when `hub_listen` is unset.
    pub async fn tick(&mut self, settings: &Settings, engine: &SharedEngine) {
        let Some(listen) = settings.hub_listen else {
            return;
        };
        if self.stopped {
            return;
        }
        let server = settings.server_name().to_string();
        let site = settings.site_name().to_string();
        let key: Key = (
            settings.database.clone(),
            site.clone(),
            server.clone(),
            listen,
        );
        let now = now_ms();
        if let Some(h) = self.hubs.get_mut(&key) {
            if h.task.is_finished() {
                self.hubs.remove(&key);
                return;
            }
            if h.until - now > RENEW_BELOW_MS {
                return;
            }
            let (holder, until) = (h.holder.clone(), now + LEASE_MS);
            let (s, srv) = (site.clone(), server.clone());
            let renewed = engine_call(engine, settings, move |e, _| {
                e.store().write(|tx| {
                    tables::hold_lease(tx, &s, &srv, &holder, &listen.to_string(), now, until)
                })
            })
            .await;
            match renewed {
                Ok(true) => h.until = until,
                other => {
                    if let Err(e) = other {
                        crate::log::emit(format!(
                            "the live-events hub could not renew its lease: {e}"
                        ));
                    }
                    let _ = h.stop.send(true);
                    self.hubs.remove(&key);
                }
            }
            return;
        }
        if self.failed.get(&key).is_some_and(|f| now - f.at < f.wait) {
            return;
        }
        let holder = format!("{}:{}", std::process::id(), crate::id::random_hex(6));
        let (s, srv, h) = (site.clone(), server.clone(), holder.clone());
        let taken = engine_call(engine, settings, move |e, _| {
            let store = e.store();
            if store
                .read(|tx| tables::lease(tx, &s, &srv))?
                .is_some_and(|(_, u)| u >= now)
            {
                return Ok(false);
            }
            store.write(|tx| {
                tables::hold_lease(tx, &s, &srv, &h, &listen.to_string(), now, now + LEASE_MS)
            })
        })
        .await;
        if !matches!(taken, Ok(true)) {
            return;
        }
        match start(settings, server.clone(), holder.clone(), listen).await {
            Ok((stop, task)) => {
                self.failed.remove(&key);
                self.hubs.insert(
                    key,
                    Hosted {
                        holder,
                        settings: settings.clone(),
                        until: now + LEASE_MS,
                        stop,
                        task,
                    },
                );
            }
            Err(why) => {
                // Doubled while failures follow each other; an old one is forgotten.
                let wait = match self.failed.get(&key) {
                    Some(f) if now - f.at < f.wait + RETRY_LISTEN_MAX_MS => {
                        (f.wait * 2).min(RETRY_LISTEN_MAX_MS)
                    }
                    _ => RETRY_LISTEN_FIRST_MS,
                };
                let error = format!(
                    "worker {} could not start the hub on {listen}: {why}; it tries again in {} s, \
                     other workers at their next poll",
                    std::process::id(),
                    wait / 1000
                );
                crate::log::emit(format!("live-events hub: {error}"));
                self.failed.insert(key, Failed { at: now, wait });
                let _ = engine_call(engine, settings, move |e, _| {
                    e.store().write(|tx| {
                        tables::set_listen_error(tx, &site, &server, Some(&error))?;
                        tables::release_lease(tx, &site, &server, &holder)
                    })
                })
                .await;
            }
        }
    }
}

impl Hosting {
    /// Stops every hub this process hosts, releases its lease and hosts
    /// none from then on (the process is exiting: a php-fpm worker
    /// recycled, a server stopping).
    pub async fn stop_all(&mut self, engine: &SharedEngine) {
        self.stopped = true;
        for ((_, site, server, _), hosted) in self.hubs.drain() {
            let _ = hosted.stop.send(true);
            let holder = hosted.holder;
            let _ = engine_call(engine, &hosted.settings, move |e, _| {
                e.store()
                    .write(|tx| tables::release_lease(tx, &site, &server, &holder))
            })
            .await;
            // Its listener is closed once the task has returned.
            let _ = hosted.task.await;
        }
    }
}

/// Listens on `listen` and runs the hub there until told to stop.
async fn start(
    settings: &Settings,
    server: String,
    holder: String,
    listen: SocketAddr,
) -> Result<(watch::Sender<bool>, JoinHandle<()>), String> {
    let tcp = TcpListener::bind(listen).await.map_err(|e| e.to_string())?;
    let udp = UdpSocket::bind(listen).await.map_err(|e| e.to_string())?;
    // The hub's own connection: its reads and writes never wait on the sender's.
    let engine: SharedEngine = Arc::default();
    let (site, srv, h) = (
        settings.site_name().to_string(),
        server.clone(),
        holder.clone(),
    );
    let started = engine_call(&engine, settings, move |e, s| {
        let key = e.hub_key(s)?;
        let now = now_ms();
        // Subscribers of an earlier hub on this server lost their connection.
        let cursor = e.store().write(|tx| {
            tables::set_listen_error(tx, &site, &srv, None)?;
            for sub in tables::take_stale_subscriptions(tx, &site, &srv, &h)? {
                tables::insert(tx, &site, &presence_update(&sub, false), now)?;
            }
            tables::last_seq(tx, &site)
        })?;
        Ok((key, cursor))
    })
    .await;
    let (key, cursor) = started.map_err(|e| {
        close(&engine);
        e.to_string()
    })?;
    let (stop, stopped) = watch::channel(false);
    let hub = Hub::new(
        settings.clone(),
        server,
        holder,
        key,
        engine,
        cursor,
        stopped,
    );
    Ok((stop, tokio::spawn(serve(hub, tcp, udp))))
}

/// Accepts connections until the hub stops.
async fn serve(hub: Arc<Hub>, tcp: TcpListener, udp: UdpSocket) {
    tokio::spawn(hub.clone().feed(udp));
    let mut stop = hub.stop_signal();
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => return,
            accepted = tcp.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors, most likely: wait, then go on.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (hub, mut stop) = (hub.clone(), hub.stop_signal());
        tokio::spawn(async move {
            let service = service_fn(move |req| hub.clone().handle(req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}
