//! The hub's HTTP side (the Mercure protocol): `GET /.well-known/mercure`
//! streams updates as Server-Sent Events, `POST` publishes, and
//! `/.well-known/mercure/subscriptions` lists who is subscribed.

use super::jwt::{self, Claims};
use super::tables::{self, Event, Subscription, Update};
use super::topics;
use crate::clock::now_ms;
use crate::settings::Settings;
use crate::shared_engine::{engine_call, SharedEngine};
use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch, Notify};

/// The hub's path, as the Mercure spec fixes it.
pub const PATH: &str = "/.well-known/mercure";
/// The subscriptions API's path.
pub const SUBSCRIPTIONS: &str = "/.well-known/mercure/subscriptions";
/// How often the hub reads new updates when nothing nudges it.
const FEED_POLL: Duration = Duration::from_millis(250);
/// Most updates read from the history at once.
const PAGE: i64 = 500;
/// A comment line sent this often keeps idle connections open through
/// proxies and finds clients that went away.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Updates a slow subscriber may have waiting before it is read again from
/// the history.
const FANOUT_BUFFER: usize = 4096;
/// Shortest pause between two reads of new updates: nudges (UDP datagrams
/// anyone on the host can send) cannot make the hub read more often.
const MIN_READ_GAP: Duration = Duration::from_millis(2);
/// How often history older than `hub_history` is deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// One running hub: what its connections share.
pub(crate) struct Hub {
    pub settings: Settings,
    pub server: String,
    pub holder: String,
    pub key: Vec<u8>,
    pub engine: SharedEngine,
    feed: broadcast::Sender<Arc<Event>>,
    /// The last update read into the feed.
    cursor: AtomicI64,
    /// Wakes the feed (a publish over HTTP, a nudge).
    wake: Notify,
    stop: watch::Receiver<bool>,
}

type Body = Either<Full<Bytes>, Stream>;

impl Drop for Hub {
    fn drop(&mut self) {
        close(&self.engine);
    }
}

/// Closes a connection off the runtime's thread: a PostgreSQL client
/// cannot be dropped inside the runtime (it blocks on its own).
pub(crate) fn close(engine: &SharedEngine) {
    let taken = engine.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(e) = taken {
        std::thread::spawn(move || drop(e));
    }
}

impl Hub {
    pub fn new(
        settings: Settings,
        server: String,
        holder: String,
        key: Vec<u8>,
        engine: SharedEngine,
        cursor: i64,
        stop: watch::Receiver<bool>,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            settings,
            server,
            holder,
            key,
            engine,
            feed: broadcast::channel(FANOUT_BUFFER).0,
            cursor: AtomicI64::new(cursor),
            wake: Notify::new(),
            stop,
        })
    }

    /// A receiver that changes when the hub stops.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    fn site(&self) -> String {
        self.settings.site_name().to_string()
    }

    /// Reads new updates into the feed until the hub stops: on a nudge
    /// (UDP datagram or local publish), else every [`FEED_POLL`].
    pub async fn feed(self: Arc<Hub>, udp: tokio::net::UdpSocket) {
        let mut stop = self.stop.clone();
        let mut buf = [0u8; 64];
        let mut pruned = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = udp.recv_from(&mut buf) => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(FEED_POLL) => {}
            }
            let (site, after) = (self.site(), self.cursor.load(Ordering::SeqCst));
            let read = engine_call(&self.engine, &self.settings, move |e, _| {
                e.store().read(|tx| tables::after(tx, &site, after, PAGE))
            })
            .await;
            match read {
                Ok(events) => {
                    let more = events.len() as i64 == PAGE;
                    for ev in events {
                        self.cursor.store(ev.seq, Ordering::SeqCst);
                        let _ = self.feed.send(Arc::new(ev));
                    }
                    if more {
                        self.wake.notify_one();
                    }
                }
                Err(e) => {
                    crate::log::emit(format!("the live-events hub could not read updates: {e}"))
                }
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = tokio::time::Instant::now();
                let (site, before) = (
                    self.site(),
                    now_ms() - crate::clock::secs_to_ms(self.settings.hub_history),
                );
                let _ = engine_call(&self.engine, &self.settings, move |e, _| {
                    e.store().write(|tx| tables::prune(tx, &site, before))
                })
                .await;
            }
            tokio::time::sleep(MIN_READ_GAP).await;
        }
    }

    /// Answers one request.
    pub async fn handle(
        self: Arc<Hub>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let path = req.uri().path().to_string();
        let response = if req.method() == Method::OPTIONS {
            plain(StatusCode::NO_CONTENT, "")
        } else if path == PATH {
            match *req.method() {
                Method::GET => self.subscribe(req).await,
                Method::POST => self.publish(req).await,
                _ => plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use GET to subscribe or POST to publish\n",
                ),
            }
        } else if path == SUBSCRIPTIONS || path.starts_with("/.well-known/mercure/subscriptions/") {
            self.subscriptions(&req, &path).await
        } else {
            plain(StatusCode::NOT_FOUND, "not a Mercure hub path\n")
        };
        Ok(cors(response))
    }

    /// The token a request carries, verified: `Ok(None)` when it has none.
    fn claims(&self, req: &Request<Incoming>) -> Result<Option<Claims>, &'static str> {
        let token = bearer(req)
            .or_else(|| cookie(req, "mercureAuthorization"))
            .or_else(|| {
                query(req)
                    .into_iter()
                    .find(|(k, _)| k == "authorization")
                    .map(|(_, v)| v)
            });
        let Some(token) = token else { return Ok(None) };
        jwt::verify(&self.key, &token, now_ms().div_euclid(1000)).map(Some)
    }

    async fn subscribe(self: Arc<Hub>, req: Request<Incoming>) -> Response<Body> {
        let claims = match self.claims(&req) {
            Ok(c) => c,
            Err(why) => return plain(StatusCode::UNAUTHORIZED, &format!("{why}\n")),
        };
        let mut selectors = Vec::new();
        let mut last_id = None;
        for (k, v) in query(&req) {
            match k.as_str() {
                "topic" => selectors.push(v),
                "lastEventID" => last_id = Some(v),
                _ => {}
            }
        }
        if let Some(v) = req
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
        {
            last_id = Some(v.to_string());
        }
        if selectors.is_empty() {
            return plain(StatusCode::BAD_REQUEST, "missing topic parameter\n");
        }
        if selectors.len() > tables::MAX_TOPICS
            || selectors.iter().any(|s| s.len() > tables::MAX_TOPIC_LEN)
        {
            return plain(
                StatusCode::BAD_REQUEST,
                "too many or too long topic parameters\n",
            );
        }
        let feed = self.feed.subscribe();
        let start = self.cursor.load(Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(64);
        let last_known = {
            let site = self.site();
            engine_call(&self.engine, &self.settings, move |e, _| {
                e.store().read(|tx| tables::last_id(tx, &site))
            })
            .await
            .ok()
            .flatten()
        };
        let subscriber = Subscriber {
            hub: self.clone(),
            id: crate::id::urn_uuid(),
            selectors,
            claims: claims.unwrap_or_default(),
            out: tx,
        };
        tokio::spawn(subscriber.run(feed, start, last_id));
        let mut response = Response::new(Either::Right(Stream(rx)));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        if let Some(v) = last_known.and_then(|id| HeaderValue::from_str(&id).ok()) {
            h.insert("last-event-id", v);
        }
        response
    }

    async fn publish(self: Arc<Hub>, req: Request<Incoming>) -> Response<Body> {
        let claims = match self.claims(&req) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return plain(
                    StatusCode::UNAUTHORIZED,
                    "publishing needs a publisher token\n",
                )
            }
            Err(why) => return plain(StatusCode::UNAUTHORIZED, &format!("{why}\n")),
        };
        let limit = self.settings.hub_max_event_size + 64 * 1024;
        let body = match Limited::new(req.into_body(), limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "the update is too large\n"),
        };
        let mut update = Update::default();
        for (k, v) in form_urlencoded::parse(&body) {
            match &*k {
                "topic" => update.topics.push(v.into_owned()),
                "data" => update.data = v.into_owned(),
                "private" => update.private = true,
                "id" => update.id = Some(v.into_owned()),
                "type" => update.kind = Some(v.into_owned()),
                "retry" => match v.parse() {
                    Ok(r) => update.retry = Some(r),
                    Err(_) => {
                        return plain(
                            StatusCode::BAD_REQUEST,
                            "retry must be a number of milliseconds\n",
                        )
                    }
                },
                _ => {}
            }
        }
        if !update
            .topics
            .iter()
            .all(|t| claims.publish.iter().any(|s| topics::matches(s, t)))
        {
            return plain(
                StatusCode::FORBIDDEN,
                "the token may not publish to these topics\n",
            );
        }
        let (settings, now) = (self.settings.clone(), now_ms());
        let stored = engine_call(&self.engine, &self.settings, move |e, _| {
            update.check(settings.hub_max_event_size)?;
            let site = settings.site_name();
            e.store().write(|tx| tables::insert(tx, site, &update, now))
        })
        .await;
        match stored {
            Ok(id) => {
                self.wake.notify_one();
                plain(StatusCode::OK, &id)
            }
            Err(crate::Error::InvalidTask(m)) => plain(StatusCode::BAD_REQUEST, &format!("{m}\n")),
            Err(e) => {
                crate::log::emit(format!(
                    "the live-events hub could not store an update: {e}"
                ));
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the update could not be stored\n",
                )
            }
        }
    }

    async fn subscriptions(self: Arc<Hub>, req: &Request<Incoming>, path: &str) -> Response<Body> {
        let claims = match self.claims(req) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return plain(
                    StatusCode::UNAUTHORIZED,
                    "the subscriptions API needs a subscriber token\n",
                )
            }
            Err(why) => return plain(StatusCode::UNAUTHORIZED, &format!("{why}\n")),
        };
        if !claims.subscribe.iter().any(|s| topics::matches(s, path)) {
            return plain(
                StatusCode::FORBIDDEN,
                "the token may not read these subscriptions\n",
            );
        }
        let rest = path.strip_prefix(SUBSCRIPTIONS).unwrap_or("");
        let parts: Vec<String> = rest
            .split('/')
            .filter(|p| !p.is_empty())
            .map(percent_decode)
            .collect();
        if parts.len() > 2 {
            return plain(StatusCode::NOT_FOUND, "no such subscription\n");
        }
        let site = self.site();
        let topic = parts.first().cloned();
        let read = engine_call(&self.engine, &self.settings, move |e, _| {
            e.store().read(|tx| {
                Ok((
                    tables::subscriptions(tx, &site, topic.as_deref(), now_ms())?,
                    tables::last_id(tx, &site)?,
                ))
            })
        })
        .await;
        let (list, last) = match read {
            Ok(r) => r,
            Err(e) => {
                crate::log::emit(format!(
                    "the live-events hub could not list subscriptions: {e}"
                ));
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "subscriptions could not be read\n",
                );
            }
        };
        let last = last.unwrap_or_else(|| "earliest".into());
        let body = match parts.get(1) {
            Some(subscriber) => match list.iter().find(|s| &s.subscriber == subscriber) {
                Some(s) => {
                    let mut v = s.json(true);
                    v["@context"] = json!("https://mercure.rocks/");
                    v["lastEventID"] = json!(last);
                    v
                }
                None => return plain(StatusCode::NOT_FOUND, "no such subscription\n"),
            },
            None => json!({
                "@context": "https://mercure.rocks/",
                "id": path,
                "type": "Subscriptions",
                "lastEventID": last,
                "subscriptions": list.iter().map(|s| s.json(true)).collect::<Vec<_>>(),
            }),
        };
        let mut r = plain(StatusCode::OK, &body.to_string());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/ld+json"),
        );
        r
    }
}

/// One subscriber's connection: sends the history it asked for, then every
/// update of the feed it may see, until it goes away or the hub stops.
struct Subscriber {
    hub: Arc<Hub>,
    id: String,
    selectors: Vec<String>,
    claims: Claims,
    out: mpsc::Sender<Bytes>,
}

impl Subscriber {
    fn wants(&self, ev: &Event) -> bool {
        topics::any_matches(&self.selectors, &ev.topics)
            && (!ev.private || topics::any_matches(&self.claims.subscribe, &ev.topics))
    }

    async fn send(&self, ev: &Event) -> bool {
        !self.wants(ev) || self.out.send(sse(ev)).await.is_ok()
    }

    /// Sends history after `from` up to the feed's cursor; false when the
    /// connection is gone. Returns the last place sent.
    async fn replay(&self, mut from: i64) -> Option<i64> {
        loop {
            let (site, after) = (self.hub.site(), from);
            let page = engine_call(&self.hub.engine, &self.hub.settings, move |e, _| {
                e.store().read(|tx| tables::after(tx, &site, after, PAGE))
            })
            .await
            .unwrap_or_default();
            let full = page.len() as i64 == PAGE;
            for ev in &page {
                if !self.send(ev).await {
                    return None;
                }
                from = ev.seq;
            }
            if !full {
                return Some(from);
            }
        }
    }

    async fn run(
        self,
        mut feed: broadcast::Receiver<Arc<Event>>,
        start: i64,
        last_id: Option<String>,
    ) {
        // The headers go out with a first comment, so the client knows it
        // is connected before any update.
        if self.out.send(Bytes::from_static(b":\n\n")).await.is_err() {
            return;
        }
        let mut sent = start;
        if let Some(id) = last_id {
            let from = if id == "earliest" {
                Some(0)
            } else {
                let site = self.hub.site();
                engine_call(&self.hub.engine, &self.hub.settings, move |e, _| {
                    e.store().read(|tx| tables::seq_of(tx, &site, &id))
                })
                .await
                .ok()
                .flatten()
            };
            if let Some(from) = from {
                match self.replay(from).await {
                    Some(s) => sent = s,
                    None => return,
                }
            }
        }
        let subscriptions = self.presence().await;
        let mut stop = self.hub.stop.clone();
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = self.out.closed() => break,
                _ = heartbeat.tick() => {
                    if self.out.send(Bytes::from_static(b":\n\n")).await.is_err() {
                        break;
                    }
                }
                ev = feed.recv() => match ev {
                    Ok(ev) if ev.seq <= sent => {}
                    Ok(ev) => {
                        if !self.send(&ev).await {
                            break;
                        }
                        sent = ev.seq;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => match self.replay(sent).await {
                        Some(s) => sent = s,
                        None => break,
                    },
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        if !subscriptions.is_empty() && !*self.hub.stop.borrow() {
            self.leave(subscriptions).await;
        }
    }

    /// Records this subscriber's subscriptions and publishes that it joined.
    async fn presence(&self) -> Vec<Subscription> {
        let now = now_ms();
        let subs: Vec<Subscription> = self
            .selectors
            .iter()
            .map(|topic| Subscription {
                subscriber: self.id.clone(),
                topic: topic.clone(),
                payload: self.claims.payload.clone(),
                since: now,
            })
            .collect();
        let (site, server, holder, list) = (
            self.hub.site(),
            self.hub.server.clone(),
            self.hub.holder.clone(),
            subs.clone(),
        );
        let stored = engine_call(&self.hub.engine, &self.hub.settings, move |e, _| {
            e.store().write(|tx| {
                for s in &list {
                    tables::add_subscription(tx, &site, &server, &holder, s)?;
                    tables::insert(tx, &site, &presence_update(s, true), now)?;
                }
                Ok(())
            })
        })
        .await;
        if let Err(e) = stored {
            crate::log::emit(format!(
                "the live-events hub could not record a subscriber: {e}"
            ));
        }
        self.hub.wake.notify_one();
        subs
    }

    async fn leave(&self, subs: Vec<Subscription>) {
        let (site, id, now) = (self.hub.site(), self.id.clone(), now_ms());
        let _ = engine_call(&self.hub.engine, &self.hub.settings, move |e, _| {
            e.store().write(|tx| {
                tables::remove_subscriber(tx, &site, &id)?;
                for s in &subs {
                    tables::insert(tx, &site, &presence_update(s, false), now)?;
                }
                Ok(())
            })
        })
        .await;
        self.hub.wake.notify_one();
    }
}

/// The private update that says `s` became active or inactive.
pub(crate) fn presence_update(s: &Subscription, active: bool) -> Update {
    let mut data = s.json(active);
    data["@context"] = json!("https://mercure.rocks/");
    Update {
        topics: vec![s.path()],
        data: data.to_string(),
        private: true,
        ..Update::default()
    }
}

/// An update as one Server-Sent Event.
fn sse(ev: &Event) -> Bytes {
    let mut out = String::with_capacity(ev.data.len() + ev.id.len() + 32);
    out.push_str("id: ");
    out.push_str(&ev.id);
    out.push('\n');
    if let Some(kind) = &ev.kind {
        out.push_str("event: ");
        out.push_str(kind);
        out.push('\n');
    }
    if let Some(retry) = ev.retry {
        out.push_str(&format!("retry: {retry}\n"));
    }
    for line in ev.data.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// The body of an event stream: what the subscriber's task sends.
pub(crate) struct Stream(mpsc::Receiver<Bytes>);

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(text.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Lets pages of any origin subscribe with a token they pass themselves
/// (a cookie is never sent cross-origin without credentials mode).
fn cors(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, last-event-id, cache-control"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("last-event-id"),
    );
    r
}

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn bearer(req: &Request<Incoming>) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

fn cookie(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_becomes_one_event_with_a_data_line_per_line() {
        let ev = Event {
            seq: 1,
            id: "urn:uuid:1".into(),
            topics: vec!["t".into()],
            data: "a\nb\r\nc".into(),
            private: false,
            kind: Some("change".into()),
            retry: Some(500),
        };
        assert_eq!(
            &sse(&ev)[..],
            b"id: urn:uuid:1\nevent: change\nretry: 500\ndata: a\ndata: b\ndata: c\n\n"
        );
    }
}
