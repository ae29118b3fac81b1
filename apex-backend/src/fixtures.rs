//! Loading the seed data: users, their usage logs and the pricing table from a fixtures folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use uuid::Uuid;

use crate::agents::{Pricing, UsageRecord};

/// A fixtures file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}:{line}: {source}")]
    Jsonl {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// One seed user from `users.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    pub id: Uuid,
    pub email: String,
    pub password: String,
    pub name: String,
    /// Usage log, relative to the fixtures folder.
    pub usage: Option<PathBuf>,
    /// The harness's pool of virtual users this one belongs to (`vu`); the backend ignores it.
    #[serde(default)]
    pub pool: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: Vec<SeedUser>,
}

/// Everything the backend seeds itself with.
#[derive(Debug, Clone)]
pub struct Fixtures {
    pub users: Vec<(SeedUser, Vec<UsageRecord>)>,
    pub pricing: Pricing,
}

impl Fixtures {
    /// Reads `users.yaml`, each user's usage log, and `pricing.yaml` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, FixtureError> {
        let users: UsersFile = read_yaml(&dir.join("users.yaml"))?;
        let pricing: Pricing = read_yaml(&dir.join("pricing.yaml"))?;
        let mut seeded = Vec::with_capacity(users.users.len());
        for user in users.users {
            let records = match &user.usage {
                Some(rel) => read_usage(&dir.join(rel))?,
                None => Vec::new(),
            };
            seeded.push((user, records));
        }
        Ok(Self {
            users: seeded,
            pricing,
        })
    }
}

fn read(path: &Path) -> Result<String, FixtureError> {
    std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, FixtureError> {
    serde_saphyr::from_str(&read(path)?).map_err(|e| FixtureError::Yaml {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Reads a JSON-lines usage log; blank lines are skipped.
pub fn read_usage(path: &Path) -> Result<Vec<UsageRecord>, FixtureError> {
    read(path)?
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|source| FixtureError::Jsonl {
                path: path.to_owned(),
                line: i + 1,
                source,
            })
        })
        .collect()
}
