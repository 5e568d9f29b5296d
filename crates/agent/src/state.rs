//! What the agent has committed to, on disk: per module, the version it
//! runs, the versions it keeps for rollback, the versions it refused and
//! why, and every transition with its reason.
//!
//! `state.json` is replaced whole (temporary file, fsync, rename, fsync of
//! the directory): after a `kill -9` at any moment the file is the old one
//! or the new one. A version becomes `current` only after it passed its
//! health check and its probation; until then the device runs, and after a
//! restart brings back, the previous `current`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Transitions kept per module.
const HISTORY: usize = 50;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub modules: BTreeMap<String, ModuleState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModuleState {
    /// The manifest digest that runs (and runs again after a restart).
    #[serde(default)]
    pub current: Option<String>,
    /// Earlier good versions, newest first.
    #[serde(default)]
    pub previous: Vec<String>,
    /// A version being switched to; a restart discards the switch.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// Versions refused, with the reason (never retried while the source
    /// still names them).
    #[serde(default)]
    pub refused: BTreeMap<String, String>,
    #[serde(default)]
    pub history: Vec<Transition>,
    /// A job's last run of its current version.
    #[serde(default)]
    pub last_run: Option<Run>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub digest: String,
    /// Switches to it that were started; a version whose switch was cut
    /// short three times (the agent died each time) is refused.
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransitionKind {
    /// A module started on a version at agent start.
    Start,
    /// A new version passed its checks and is current.
    Update,
    /// A new version failed after the switch; the old one is back.
    Rollback,
    /// A new version was not taken (download, verification, start or
    /// health check failed before any switch).
    Refused,
    /// The current version could not start; an earlier one runs.
    Fallback,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// RFC 3339, UTC.
    pub at: String,
    pub kind: TransitionKind,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub digest: String,
    pub at: String,
    pub exit_code: i32,
    pub ok: bool,
    pub message: String,
}

impl ModuleState {
    pub fn record(
        &mut self,
        kind: TransitionKind,
        from: Option<String>,
        to: Option<String>,
        reason: impl Into<String>,
    ) {
        self.history.push(Transition {
            at: now(),
            kind,
            from,
            to,
            reason: reason.into(),
        });
        let excess = self.history.len().saturating_sub(HISTORY);
        self.history.drain(..excess);
    }

    /// Make `digest` current, keeping the old current first among the
    /// previous versions (at most `keep`).
    pub fn promote(&mut self, digest: &str, keep: usize) {
        if let Some(old) = self.current.take()
            && old != digest
        {
            self.previous.retain(|d| d != &old);
            self.previous.insert(0, old);
        }
        self.previous.retain(|d| d != digest);
        self.previous.truncate(keep);
        self.current = Some(digest.to_owned());
        self.pending = None;
    }

    pub fn last(&self) -> Option<&Transition> {
        self.history.last()
    }
}

/// RFC 3339 of now, UTC, second precision.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `state.json` in the agent's directory.
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join("state.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The committed state; empty on first start. A file that does not
    /// parse is kept aside (`state.json.corrupt`) rather than trusted.
    pub fn load(&self) -> std::io::Result<State> {
        match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(s) => Ok(s),
                Err(e) => {
                    let aside = self.path.with_extension("json.corrupt");
                    tracing::error!(
                        path = %self.path.display(),
                        "state does not parse ({e}); moved to {} and starting empty",
                        aside.display()
                    );
                    std::fs::rename(&self.path, aside)?;
                    Ok(State::default())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    /// Replace the file with `state`: whole or not at all.
    pub fn save(&self, state: &State) -> std::io::Result<()> {
        write_atomic(&self.path, &serde_json::to_vec_pretty(state)?)
    }
}

/// Temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promote_keeps_previous_versions_newest_first() {
        let mut m = ModuleState::default();
        m.promote("a", 2);
        m.promote("b", 2);
        m.promote("c", 2);
        m.promote("d", 2);
        assert_eq!(m.current.as_deref(), Some("d"));
        assert_eq!(m.previous, ["c", "b"]);
        // Back to an old one: it leaves the list.
        m.promote("b", 2);
        assert_eq!(m.previous, ["d", "c"]);
    }

    #[test]
    fn history_is_bounded() {
        let mut m = ModuleState::default();
        for i in 0..(HISTORY + 10) {
            m.record(TransitionKind::Update, None, Some(i.to_string()), "x");
        }
        assert_eq!(m.history.len(), HISTORY);
        assert_eq!(
            m.last().unwrap().to.as_deref(),
            Some((HISTORY + 9).to_string().as_str())
        );
    }

    #[test]
    fn saves_whole_and_sets_a_corrupt_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        assert_eq!(f.load().unwrap(), State::default());
        let mut s = State::default();
        s.modules
            .entry("m".into())
            .or_default()
            .promote("sha256:1", 2);
        f.save(&s).unwrap();
        assert_eq!(f.load().unwrap(), s);
        std::fs::write(f.path(), b"{ half").unwrap();
        assert_eq!(f.load().unwrap(), State::default());
        assert!(dir.path().join("state.json.corrupt").exists());
    }
}
