//! Incidents and audits: the rows the event path, the fan-out and the auditor all write, and the
//! readers of both.

use super::errors::db;
use super::{from_nanos, nanos};
use crate::rows::{stored_opt_id, system_and_actor};
use crate::{AuditRecord, Incident, IncidentFilter, StoreError, StoredAudit};
use chrono::{DateTime, Utc};
use driftless_core::{Location, Sku};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

/// Inserts incidents, one statement over arrays.
pub(super) async fn insert_incidents(
    conn: &mut PgConnection,
    incidents: &[Incident],
) -> Result<(), sqlx::Error> {
    if incidents.is_empty() {
        return Ok(());
    }
    let mut cols: [Vec<Option<String>>; 6] = Default::default();
    let (mut kinds, mut details, mut ats) = (vec![], vec![], vec![]);
    for i in incidents {
        let (system, actor) = system_and_actor(i);
        kinds.push(i.kind.as_str());
        cols[0].push(i.sku.as_ref().map(|s| s.to_string()));
        cols[1].push(i.location.as_ref().map(|l| l.to_string()));
        cols[2].push(system);
        cols[3].push(actor);
        cols[4].push(i.event_id.clone());
        details.push(i.detail.as_str());
        ats.push(nanos(i.at));
    }
    let [skus, locs, systems, actors, event_ids, _] = cols;
    sqlx::query(
        "INSERT INTO incidents (kind, sku, location, system, actor, event_id, detail, at_nanos) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::int8[])",
    )
    .bind(&kinds)
    .bind(&skus)
    .bind(&locs)
    .bind(&systems)
    .bind(&actors)
    .bind(&event_ids)
    .bind(&details)
    .bind(&ats)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn incidents(
    pool: &PgPool,
    f: &IncidentFilter,
) -> Result<Vec<Incident>, StoreError> {
    let rows = sqlx::query(
        "SELECT * FROM incidents WHERE ($1::text IS NULL OR kind = $1) \
         AND ($2::text IS NULL OR sku = $2) AND ($3::text IS NULL OR system = $3) \
         ORDER BY id DESC LIMIT $4",
    )
    .bind(f.kind.as_deref())
    .bind(f.sku.as_deref())
    .bind(f.system.as_deref())
    .bind(f.limit.max(1) as i64)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(Incident {
                kind: r.try_get("kind").map_err(db)?,
                sku: stored_opt_id("sku", r.try_get("sku").map_err(db)?, Sku::parse)?,
                location: stored_opt_id(
                    "location",
                    r.try_get("location").map_err(db)?,
                    Location::parse,
                )?,
                system: r.try_get("system").map_err(db)?,
                actor: r.try_get("actor").map_err(db)?,
                event_id: r.try_get("event_id").map_err(db)?,
                detail: r.try_get("detail").map_err(db)?,
                at: from_nanos(r.try_get("at_nanos").map_err(db)?),
            })
        })
        .collect()
}

pub(super) async fn save_audit(pool: &PgPool, a: &AuditRecord) -> Result<i64, StoreError> {
    let handoffs =
        serde_json::to_string(&a.handoffs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query_scalar(
        "INSERT INTO audits (at_nanos, skus_compared, drifting, handoffs, report) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(nanos(a.at))
    .bind(a.skus_compared)
    .bind(a.drifting)
    .bind(handoffs)
    .bind(&a.report_json)
    .fetch_one(pool)
    .await
    .map_err(db)
}

pub(super) async fn audits_since(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = sqlx::query("SELECT * FROM audits WHERE at_nanos >= $1 ORDER BY at_nanos, id")
        .bind(nanos(since))
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(audit_row).collect()
}

pub(super) async fn audits_page(
    pool: &PgPool,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<StoredAudit>, StoreError> {
    let rows = sqlx::query("SELECT * FROM audits WHERE id < $1 ORDER BY id DESC LIMIT $2")
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(StoredAudit {
                id: r.try_get("id").map_err(db)?,
                record: audit_row(r)?,
            })
        })
        .collect()
}

pub(super) async fn audit(pool: &PgPool, id: i64) -> Result<Option<StoredAudit>, StoreError> {
    let row = sqlx::query("SELECT * FROM audits WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    row.map(|r| {
        Ok(StoredAudit {
            id,
            record: audit_row(&r)?,
        })
    })
    .transpose()
}

fn audit_row(r: &PgRow) -> Result<AuditRecord, StoreError> {
    let h: String = r.try_get("handoffs").map_err(db)?;
    Ok(AuditRecord {
        at: from_nanos(r.try_get("at_nanos").map_err(db)?),
        skus_compared: r.try_get("skus_compared").map_err(db)?,
        drifting: r.try_get("drifting").map_err(db)?,
        handoffs: serde_json::from_str(&h)
            .map_err(|e| StoreError::Corrupt(format!("audit handoffs: {e}")))?,
        report_json: r.try_get("report").map_err(db)?,
    })
}
