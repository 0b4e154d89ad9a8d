//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

use async_engine_core::protocol::Incoming;
use async_engine_core::{DeferOptions, Dispatch, Engine, Settings};
use std::path::PathBuf;

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "async-engine-test-{tag}-{}-{}",
            std::process::id(),
            async_engine_core::id::random_hex(4)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn db(&self) -> String {
        self.0.join("engine.sqlite").to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn settings(db: &str) -> Settings {
    Settings {
        database: Some(db.to_string()),
        secret: Some("test-secret-0123456789".into()),
        ..Settings::default()
    }
}

pub const T0: i64 = 1_700_000_000_000;

/// The request an endpoint receives for a dispatch.
pub fn received(d: &Dispatch) -> Incoming {
    Incoming {
        method: "POST".into(),
        uri: d.endpoint.clone(),
        slot: Some(d.slot.clone()),
        time: Some(d.time.to_string()),
        signature: Some(d.signature.clone()),
    }
}

pub fn defer(
    e: &mut Engine,
    s: &Settings,
    endpoint: &str,
    name: &str,
    now: i64,
) -> async_engine_core::Deferred {
    e.defer(
        s,
        None,
        endpoint,
        name,
        "[]",
        &DeferOptions::default(),
        true,
        now,
    )
    .unwrap()
}
