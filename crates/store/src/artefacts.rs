//! The artefacts table, neutral part: which artefact each (model, version) served, and the
//! registration both backends run at the log writer's start (the loop and the rule; only the
//! two statements differ between `sqlite_log` and `pg_log`).
//!
//! A row is one (model, version, artefact, git SHA, registry) the gateway served, with the
//! time it was first seen; prediction rows name theirs by `artefact_id`. A start whose
//! artefact differs from one the store knows under the same version name is refused
//! ([`VersionProvenance::conflict_with`]), so a version name never silently changes what it
//! serves.

use switchyard_core::provenance::VersionProvenance;

use crate::StoreError;

/// One row of the artefacts table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtefact {
    pub id: i64,
    pub provenance: VersionProvenance,
    pub first_seen_ms: i64,
}

/// The artefact id of each (model, version) this writer serves, looked up per record on the
/// writer thread (two hash lookups, no allocation).
#[derive(Debug, Clone, Default)]
pub(crate) struct ArtefactIds(switchyard_core::NameMap<switchyard_core::NameMap<i64>>);

impl ArtefactIds {
    pub(crate) fn get(&self, model: &str, version: &str) -> Option<i64> {
        self.0.get(model)?.get(version).copied()
    }
}

/// The two statements of a registration, run inside the caller's transaction.
pub(crate) trait ArtefactTx {
    /// Every row stored for `model` and `version`.
    fn rows_of(&mut self, model: &str, version: &str) -> Result<Vec<StoredArtefact>, StoreError>;
    /// Adds a row; returns its id.
    fn insert(&mut self, p: &VersionProvenance, now_ms: i64) -> Result<i64, StoreError>;
}

/// Checks every version against the rows stored under its name and, when none conflicts,
/// finds or adds the row of each (with `write`; without it nothing is added and a version
/// seen for the first time has no id). Every conflict is listed in one
/// [`StoreError::ArtefactChanged`].
pub(crate) fn register(
    tx: &mut dyn ArtefactTx,
    versions: &[VersionProvenance],
    now_ms: i64,
    write: bool,
) -> Result<ArtefactIds, StoreError> {
    let mut conflicts = Vec::new();
    let mut found = Vec::with_capacity(versions.len());
    for p in versions {
        let rows = tx.rows_of(&p.model, &p.version)?;
        // The first conflicting row is enough to name the change.
        if let Some(message) = rows.iter().find_map(|r| p.conflict_with(&r.provenance)) {
            conflicts.push(message);
        }
        found.push(rows.iter().find(|r| &r.provenance == p).map(|r| r.id));
    }
    if !conflicts.is_empty() {
        return Err(StoreError::ArtefactChanged(conflicts));
    }
    let mut ids = ArtefactIds::default();
    for (p, id) in versions.iter().zip(found) {
        let id = match id {
            Some(id) => Some(id),
            None if write => Some(tx.insert(p, now_ms)?),
            None => None,
        };
        if let Some(id) = id {
            ids.0
                .entry(p.model.clone())
                .or_default()
                .insert(p.version.clone(), id);
        }
    }
    Ok(ids)
}
