//! Export of any query's whole result, page by page, in constant memory: NDJSON (the
//! events, or the chosen fields of each) or CSV (one column per chosen field).
//!
//! Pages are read with cursors ([`crate::index::Cursor`]), so an export is consistent
//! while events keep arriving and holds at most one page of events at a time; the caller
//! decides where each chunk goes (an HTTP body, a file) and may stop it early.

use serde_json::Value;
use yagura_shared::Event;

use crate::index::{EventIndex, IndexError, SearchRequest};

/// Events read per page.
pub const PAGE: usize = 1000;
/// Columns of a CSV export that names none.
pub const DEFAULT_CSV_FIELDS: &[&str] = &[
    "@timestamp",
    "host.name",
    "event.dataset",
    "event.action",
    "event.outcome",
    "user.name",
    "source.ip",
    "message",
];

/// How exported events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "ndjson" | "json" => Ok(Format::Ndjson),
            "csv" => Ok(Format::Csv),
            other => Err(format!("format `{other}`: use ndjson or csv")),
        }
    }
}

/// Runs `request` to its end, handing each page's bytes to `sink`; `sink` returns false
/// to stop (the reader went away). Returns how many events were written.
pub fn export(
    index: &EventIndex,
    mut request: SearchRequest,
    format: Format,
    mut sink: impl FnMut(Vec<u8>) -> bool,
) -> Result<u64, IndexError> {
    request.limit = PAGE;
    request.aggs.clear();
    request.count_total = false;
    let columns: Vec<String> = match (format, request.fields.is_empty()) {
        (Format::Csv, true) => DEFAULT_CSV_FIELDS.iter().map(|f| f.to_string()).collect(),
        _ => request.fields.clone(),
    };
    if format == Format::Csv {
        // The CSV cells are read from whole events.
        request.fields.clear();
        let mut header = csv::Writer::from_writer(Vec::new());
        header
            .write_record(&columns)
            .map_err(|e| IndexError::Query(e.to_string()))?;
        if !sink(csv_bytes(header)?) {
            return Ok(0);
        }
    }
    let mut written = 0u64;
    loop {
        let page = index.search(&request)?;
        let mut chunk = Vec::new();
        match format {
            Format::Ndjson => {
                for hit in &page.hits {
                    serde_json::to_writer(&mut chunk, &hit.event)
                        .map_err(|e| IndexError::Query(e.to_string()))?;
                    chunk.push(b'\n');
                }
            }
            Format::Csv => {
                let mut rows = csv::Writer::from_writer(chunk);
                for hit in &page.hits {
                    let event = hit.event.as_object().cloned().map(Event::from_map);
                    rows.write_record(
                        columns
                            .iter()
                            .map(|c| cell(event.as_ref().and_then(|e| e.get(c)))),
                    )
                    .map_err(|e| IndexError::Query(e.to_string()))?;
                }
                chunk = csv_bytes(rows)?;
            }
        }
        written += page.hits.len() as u64;
        if !chunk.is_empty() && !sink(chunk) {
            return Ok(written);
        }
        match page.next_cursor.as_deref().map(str::parse) {
            Some(Ok(cursor)) => request.after = Some(cursor),
            Some(Err(e)) => return Err(IndexError::Query(e)),
            None => return Ok(written),
        }
    }
}

fn csv_bytes(writer: csv::Writer<Vec<u8>>) -> Result<Vec<u8>, IndexError> {
    writer
        .into_inner()
        .map_err(|e| IndexError::Query(e.to_string()))
}

/// A field's value as a CSV cell: text as is, anything else as JSON.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    fn events(n: usize) -> Vec<Event> {
        let start = Utc::now() - Duration::hours(1);
        (0..n)
            .map(|i| {
                let mut e = Event::new(start + Duration::milliseconds(i as i64));
                e.set_str("user.name", if i % 3 == 0 { "root" } else { "alice" });
                e.set_str("message", format!("line {i}, with \"quotes\""));
                e
            })
            .collect()
    }

    fn request(query: &str, fields: &[&str]) -> SearchRequest {
        SearchRequest {
            limit: 1,
            oldest_first: true,
            fields: fields.iter().map(|f| f.to_string()).collect(),
            ..SearchRequest::new(query)
        }
    }

    #[test]
    fn ndjson_holds_every_match_once_across_pages() {
        let events = events(2 * PAGE + 345);
        let index = crate::index::index_in_ram(&events);
        let mut out = Vec::new();
        let mut chunks = 0;
        let written = export(
            &index,
            request("user.name:root", &[]),
            Format::Ndjson,
            |c| {
                chunks += 1;
                out.extend(c);
                true
            },
        )
        .expect("export");
        let want: Vec<&Event> = events
            .iter()
            .filter(|e| e.get_str("user.name") == Some("root"))
            .collect();
        assert_eq!(written, want.len() as u64);
        assert!(chunks >= 1);
        let lines: Vec<Value> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("json line"))
            .collect();
        let got: Vec<String> = lines
            .iter()
            .map(|e| e["event"]["id"].as_str().unwrap_or("").to_string())
            .collect();
        let expected: Vec<String> = want
            .iter()
            .filter_map(|e| e.id())
            .map(|id| id.to_string())
            .collect();
        assert_eq!(got, expected, "every match once, oldest first");
    }

    #[test]
    fn csv_has_a_header_and_one_escaped_row_per_event() {
        let events = events(PAGE + 10);
        let index = crate::index::index_in_ram(&events);
        let mut out = Vec::new();
        export(
            &index,
            request("*", &["user.name", "message"]),
            Format::Csv,
            |c| {
                out.extend(c);
                true
            },
        )
        .expect("export");
        let mut reader = csv::Reader::from_reader(out.as_slice());
        assert_eq!(
            reader.headers().expect("header").iter().collect::<Vec<_>>(),
            ["user.name", "message"]
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
        assert_eq!(rows.len(), events.len());
        assert_eq!(&rows[0][0], "root");
        assert_eq!(&rows[0][1], "line 0, with \"quotes\"");
    }

    #[test]
    fn a_reader_that_goes_away_stops_the_export() {
        let index = crate::index::index_in_ram(&events(3 * PAGE));
        let mut pages = 0;
        let written = export(&index, request("*", &[]), Format::Ndjson, |_| {
            pages += 1;
            false
        })
        .expect("export");
        assert_eq!((pages, written), (1, PAGE as u64));
    }
}
