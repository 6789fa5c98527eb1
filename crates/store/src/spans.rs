//! How the SQLite log finds a request's records without an index on `request_id` (see
//! `sqlite::LOG_TABLES`): the writer files each batch's records under the millisecond their
//! request id carries (`request_spans`: id ranges, one row per millisecond per batch) or, for
//! ids without one, by name (`named_requests`: one row per record); [`span_rows`] and
//! [`named_rows`] are the lookups both readers and the feedback path use. It exists so that
//! the writer (`sqlite_log`) and the move of an older log (`sqlite`) file records the same way.

use rusqlite::Transaction;

use crate::StoreError;

/// The millisecond a request id carries when it has the form the gateway generates: 32
/// lowercase hex digits, the first 12 a Unix time in milliseconds. A client may send an id of
/// that form too: it is filed the same way when the time it names is near its record's
/// ([`filing_ms`]), else by name, and looked up both ways.
pub(crate) fn request_ms(request_id: &str) -> Option<i64> {
    let b: &[u8; 32] = request_id.as_bytes().try_into().ok()?;
    // The writer calls this per record: every byte through a table, the check one `OR` over
    // them all (no branch per byte), then the first 12 digits read.
    if b.iter()
        .fold(0u8, |bad, &c| bad | HEX_DIGIT[usize::from(c)])
        & 0xf0
        != 0
    {
        return None;
    }
    Some(b[..12].iter().fold(0i64, |ms, &c| {
        ms << 4 | i64::from(HEX_DIGIT[usize::from(c)])
    }))
}

/// How far the millisecond a request id carries may be from its record's time for the record
/// to be filed under it. The gateway's ids carry the request's arrival; a client's
/// time-ordered ids (a UUIDv7's hex digits) its own clock's, minutes off at worst. Other ids of
/// that form are filed by name: a counter behind a constant prefix (zero-padded, say) would
/// put every record under one millisecond, each lookup then reading them all, and random hex
/// digits would give each record a span of its own.
const NEAR_MS: u64 = 3_600_000;

/// The millisecond record `ts_ms` of request `request_id` is filed under, `None` when it is
/// filed by name.
pub(crate) fn filing_ms(request_id: &str, ts_ms: i64) -> Option<i64> {
    request_ms(request_id).filter(|ms| ms.abs_diff(ts_ms) <= NEAR_MS)
}

/// The value of each lower-case hex digit, 0xff for any other byte.
static HEX_DIGIT: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 16 {
        table[b"0123456789abcdef"[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Records of one millisecond further apart than this (in ids) start a new span, so that a
/// straggler (a shadow's late answer) does not stretch its millisecond's span over the batch.
const MAX_GAP: i64 = 64;

/// A run of record ids holding every record of one batch whose request id carries `ms`
/// between `first` and `last` (and records of other requests in between).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub ms: i64,
    pub first: i64,
    pub last: i64,
}

/// The spans of records added in id order; ids without a millisecond are left to the caller
/// ([`SpanBuilder::add`] says which).
#[derive(Debug, Default)]
pub(crate) struct SpanBuilder {
    spans: Vec<Span>,
}

impl SpanBuilder {
    /// Files record `id` (greater than every id added before) of request `request_id`, logged
    /// at `ts_ms`; `false` when it must be filed by name ([`filing_ms`]).
    pub(crate) fn add(&mut self, id: i64, request_id: &str, ts_ms: i64) -> bool {
        let Some(ms) = filing_ms(request_id, ts_ms) else {
            return false;
        };
        // Records come mostly in time order: the span sought is nearly always the last one.
        match self.spans.iter_mut().rev().find(|s| s.ms == ms) {
            Some(span) if id - span.last <= MAX_GAP => span.last = id,
            _ => self.spans.push(Span {
                ms,
                first: id,
                last: id,
            }),
        }
        true
    }

    pub(crate) fn finish(self) -> Vec<Span> {
        self.spans
    }
}

/// Drops the spans starting after record `newest`, the newest record there is: their records
/// were deleted. Record ids come back after the newest records are deleted (an operator's
/// `DELETE`; retention never deletes the newest), and a span of deleted records would then
/// start at a new record's id. (One that starts before and reaches past it may cover new
/// records, which [`request_rows`]'s callers then read twice and keep once.) A seek to the
/// table's end when nothing was deleted.
pub(crate) fn drop_stale(tx: &Transaction<'_>, newest: i64) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM request_spans WHERE first_id > ?1")?
        .execute([newest])?;
    Ok(())
}

/// Writes `spans` and the named records (`(request_id, id)`) in the caller's transaction.
pub(crate) fn insert<'a>(
    tx: &Transaction<'_>,
    spans: &[Span],
    named: impl IntoIterator<Item = (&'a str, i64)>,
) -> Result<(), StoreError> {
    if !spans.is_empty() {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO request_spans (first_id, last_id, ms) VALUES (?1, ?2, ?3)",
        )?;
        for s in spans {
            stmt.execute(rusqlite::params![s.first, s.last, s.ms])?;
        }
    }
    let mut named = named.into_iter().peekable();
    if named.peek().is_some() {
        let mut stmt =
            tx.prepare_cached("INSERT INTO named_requests (request_id, id) VALUES (?1, ?2)")?;
        for (request_id, id) in named {
            stmt.execute(rusqlite::params![request_id, id])?;
        }
    }
    Ok(())
}

/// The query over the records (alias `p`, the `predictions` view) of request `?1` filed
/// under the millisecond its id carries (bound as `?2`, [`request_ms`]): `columns` selected,
/// then the record's id as `row_id`; `filter` (`AND …`, may be empty, its parameters from
/// `?3` on) applied. Reads the millisecond's spans by their index and scans each by id. A
/// record two spans cover (one left by deleted records whose ids came back) comes twice:
/// callers keep one per `row_id`. An id of that form may have records filed by name too
/// ([`filing_ms`]): [`named_rows`] finds those.
///
/// Two plain statements, not one `UNION`: inside the feedback transaction SQLite prepared
/// the compound statement again before every lookup (a parse per label; BENCHMARKS.md).
pub(crate) fn span_rows(columns: &str, filter: &str) -> String {
    format!(
        "SELECT {columns}, p.id AS row_id
         FROM request_spans s JOIN predictions p ON p.id BETWEEN s.first_id AND s.last_id
         WHERE s.ms = ?2 AND p.request_id = ?1 {filter}"
    )
}

/// As [`span_rows`], the records of request `?1` filed by name, read by their key (`?2` is
/// not used: `?2 IS NULL OR 1` only keeps both statements' parameters numbered alike).
pub(crate) fn named_rows(columns: &str, filter: &str) -> String {
    format!(
        "SELECT {columns}, p.id AS row_id
         FROM named_requests n JOIN predictions p ON p.id = n.id
         WHERE n.request_id = ?1 AND (?2 IS NULL OR 1) {filter}"
    )
}

/// Whether any request id of the form [`request_ms`] reads is filed by name (a scan of the
/// names: `sqlite_log::ByMillisecond` asks once per read of the log).
pub(crate) fn stray_names(conn: &rusqlite::Connection) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM named_requests
                        WHERE length(request_id) = 32 AND request_id NOT GLOB '*[^0-9a-f]*')",
        [],
        |r| r.get(0),
    )?)
}

/// The query over every record of millisecond `?2`'s spans that `filter` keeps (as in
/// [`span_rows`]; `?1` is not used), `columns` selected, then the record's request id as
/// `row_request` and its id as `row_id`: what [`span_rows`] reads for one request of that
/// millisecond, for all of them at once (those filed under it).
pub(crate) fn millisecond_rows(columns: &str, filter: &str) -> String {
    format!(
        "SELECT {columns}, p.request_id AS row_request, p.id AS row_id
         FROM request_spans s JOIN predictions p ON p.id BETWEEN s.first_id AND s.last_id
         WHERE s.ms = ?2 {filter}"
    )
}

/// Rebuilds the spans and names of every record already in `prediction_rows` (a log written
/// before them), as the writer would have filed them in batches of `chunk` records.
pub(crate) fn file_existing(tx: &Transaction<'_>, chunk: usize) -> Result<u64, StoreError> {
    let mut stmt = tx.prepare("SELECT id, request_id, ts_ms FROM prediction_rows ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut builder = SpanBuilder::default();
    let mut named: Vec<(String, i64)> = Vec::new();
    let flush = |builder: &mut SpanBuilder, named: &mut Vec<(String, i64)>| {
        let spans = std::mem::take(builder).finish();
        insert(tx, &spans, named.iter().map(|(r, id)| (r.as_str(), *id)))?;
        named.clear();
        Ok::<_, StoreError>(())
    };
    let mut total = 0u64;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let request_id: String = row.get(1)?;
        if !builder.add(id, &request_id, row.get(2)?) {
            named.push((request_id, id));
        }
        total += 1;
        if total.is_multiple_of(chunk as u64) {
            flush(&mut builder, &mut named)?;
        }
    }
    flush(&mut builder, &mut named)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_32_lowercase_hex_digits_carry_a_millisecond() {
        let id = format!("{:012x}{}", 1_700_000_000_123i64, "0123456789abcdef0123");
        assert_eq!(request_ms(&id), Some(1_700_000_000_123));
        assert_eq!(request_ms(&id.to_uppercase()), None);
        assert_eq!(request_ms(&id[..31]), None);
        assert_eq!(request_ms(&format!("{id}0")), None);
        assert_eq!(request_ms("req-42"), None);
        assert_eq!(request_ms(&format!("{}g", &id[..31])), None);
        // 32 bytes, not 32 hex digits.
        assert_eq!(request_ms(&format!("{}é", &id[..30])), None);
    }

    /// An id of the generated form is filed under its millisecond only near its record's
    /// time, an hour either way: a zero-padded counter or a random hex id is filed by name.
    #[test]
    fn a_millisecond_far_from_the_records_time_is_filed_by_name() {
        let now = 1_700_000_000_000i64;
        let hour = 3_600_000;
        assert_eq!(filing_ms(&id(now, 1), now), Some(now));
        assert_eq!(filing_ms(&id(now - hour, 1), now), Some(now - hour));
        assert_eq!(filing_ms(&id(now + hour, 1), now), Some(now + hour));
        assert_eq!(filing_ms(&id(now + hour + 1, 1), now), None);
        assert_eq!(filing_ms(&id(now - hour - 1, 1), now), None);
        assert_eq!(filing_ms(&format!("{:032x}", 42), now), None);
        assert_eq!(filing_ms("f47ac10b58cc4372a5670e02b2c3d479", now), None);
        assert_eq!(filing_ms("req-42", now), None);
        let mut b = SpanBuilder::default();
        assert!(!b.add(1, &format!("{:032x}", 42), now));
        assert!(b.add(2, &id(now, 1), now));
        assert_eq!(b.finish().len(), 1);
    }

    fn id(ms: i64, n: u32) -> String {
        format!("{ms:012x}{n:020x}")
    }

    #[test]
    fn a_batch_is_filed_by_millisecond_with_stragglers_apart() {
        let mut b = SpanBuilder::default();
        // ms 10 at ids 1..=3, ms 11 interleaved at 2 and 4..=5, a named id at 6, ms 10 again
        // at 6 + MAX_GAP (within reach of 3? no: a new span) and ms 11 at 5 + MAX_GAP (within).
        assert!(b.add(1, &id(10, 1), 10));
        assert!(b.add(2, &id(11, 1), 10));
        assert!(b.add(3, &id(10, 2), 10));
        assert!(b.add(4, &id(11, 2), 11));
        assert!(b.add(5, &id(11, 3), 11));
        assert!(!b.add(6, "client-chosen", 11));
        assert!(b.add(3 + MAX_GAP + 1, &id(10, 3), 12));
        assert!(b.add(5 + MAX_GAP, &id(11, 4), 12));
        assert_eq!(
            b.finish(),
            vec![
                Span {
                    ms: 10,
                    first: 1,
                    last: 3
                },
                Span {
                    ms: 11,
                    first: 2,
                    last: 5 + MAX_GAP
                },
                Span {
                    ms: 10,
                    first: 3 + MAX_GAP + 1,
                    last: 3 + MAX_GAP + 1
                },
            ]
        );
    }
}
