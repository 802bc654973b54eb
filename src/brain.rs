//! The façade: the one entry point the server (and in-process tools) call.
//!
//! Methods are synchronous and may block on SQLite; async callers run them on a blocking
//! thread. Architecture Invariant: nothing here knows about sockets, JSON-RPC or wire types;
//! it returns engine types and [`crate::error::Error`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Kind};
use crate::identity::{self, UserId};
use crate::store::{self, Counts, Store, UserRow};

pub struct Brain {
    store: Arc<Store>,
    data_dir: PathBuf,
    user_id: UserId,
    user_email: String,
    started: Instant,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub version: &'static str,
    pub pid: u32,
    pub uptime_secs: f64,
    pub data_dir: PathBuf,
    pub store_path: PathBuf,
    pub store_bytes: u64,
    pub schema_version: u32,
    pub user_id: UserId,
    pub user_email: String,
    pub counts: Counts,
}

impl Brain {
    /// Wraps an open store and records the acting user in it.
    pub fn new(
        store: Arc<Store>,
        data_dir: PathBuf,
        user_email: &str,
        user_id: &UserId,
    ) -> Result<Brain, Error> {
        // A users file may have given this address another id; the stored one wins so that
        // every row the daemon writes agrees with the users table.
        let user_id = store.write(|tx| store::ensure_user(tx, user_id, user_email))?;
        Ok(Brain {
            store,
            data_dir,
            user_id,
            user_email: user_email.to_owned(),
            started: Instant::now(),
        })
    }

    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    pub fn status(&self) -> Result<Status, Error> {
        let counts = self.store.read(store::counts)?;
        Ok(Status {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            data_dir: self.data_dir.clone(),
            store_path: self.store.path().to_owned(),
            store_bytes: self.store.size_bytes(),
            schema_version: store::migrations::latest_version(),
            user_id: self.user_id.clone(),
            user_email: self.user_email.clone(),
            counts,
        })
    }

    pub fn identity_id(&self, email: &str) -> Result<UserId, Error> {
        if !identity::is_email(email) {
            return Err(Error::new(
                Kind::InvalidParams,
                format!("{email:?} is not an e-mail address"),
            ));
        }
        Ok(UserId::for_email(email))
    }

    pub fn user_list(&self) -> Result<Vec<UserRow>, Error> {
        Ok(self.store.read(store::list_users)?)
    }
}
