//! The `meta` table: values the engine keeps beside its queues, one per
//! key (the generated HMAC secret, the target learned from web requests,
//! why a server's hub could not listen).

use crate::db::{args, Tx};
use crate::error::Result;

/// The value stored under `key`.
pub(crate) fn get(tx: &mut dyn Tx, key: &str) -> Result<Option<String>> {
    tx.text("SELECT value FROM meta WHERE key = ?1", args![key])
}

/// Stores `value` under `key`, replacing what was there.
pub(crate) fn set(tx: &mut dyn Tx, key: &str, value: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        args![key, value],
    )?;
    Ok(())
}

/// Removes what is stored under `key`, if anything.
pub(crate) fn delete(tx: &mut dyn Tx, key: &str) -> Result<()> {
    tx.execute("DELETE FROM meta WHERE key = ?1", args![key])?;
    Ok(())
}

/// The value under `key`: the one already stored, else `value`, stored now.
/// Of several processes storing at once, the first one's value is kept
/// and every one of them gets it.
pub(crate) fn get_or_store(tx: &mut dyn Tx, key: &str, value: &str) -> Result<Option<String>> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        args![key, value],
    )?;
    get(tx, key)
}
