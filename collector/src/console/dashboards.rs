//! Dashboards: JSON files of panels, shipped in `dashboards/` (embedded) and optionally
//! read from a directory of the collector's own (`[console] dashboards`). Every file is
//! checked when loaded — unknown keys, panel types, queries that do not parse, `top`
//! fields that cannot be bucketed — so a broken dashboard is an error at start, not an
//! empty panel in front of an analyst.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The dashboards that ship with Yagura (file stem, text).
const SHIPPED: &[(&str, &str)] = &[
    (
        "authentication-overview",
        include_str!("../../../dashboards/authentication-overview.json"),
    ),
    (
        "fleet-health",
        include_str!("../../../dashboards/fleet-health.json"),
    ),
    (
        "shop-security",
        include_str!("../../../dashboards/shop-security.json"),
    ),
];

/// Largest dashboard file read from a directory.
const MAX_FILE: u64 = 256 * 1024;
/// Most panels on one dashboard (each is a search when it is opened).
const MAX_PANELS: usize = 24;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    /// The file stem (not in the file).
    #[serde(default, skip_deserializing)]
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The default time range (`15m`, `1h`, `24h`, `7d`, `30d`, …).
    #[serde(default = "default_range")]
    pub time_range: String,
    pub panels: Vec<Panel>,
}

fn default_range() -> String {
    "24h".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PanelKind {
    /// Count of matching events per time bucket.
    Timeseries,
    /// Count of matching events.
    Number,
    /// The most frequent values of `field` among matching events.
    Top,
    /// The newest matching events, `columns` of each.
    Table,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Panel {
    pub title: String,
    #[serde(rename = "type")]
    pub kind: PanelKind,
    #[serde(default = "every_event")]
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

fn every_event() -> String {
    "*".into()
}

/// The dashboards a collector serves, by id.
#[derive(Debug, Clone, Default)]
pub struct Dashboards {
    list: Vec<Dashboard>,
}

impl Dashboards {
    /// The shipped dashboards, then those in `dir` (a file with a shipped id replaces it).
    pub fn load(dir: Option<&Path>) -> Result<Self, String> {
        let mut list = Vec::new();
        for (id, text) in SHIPPED {
            list.push(parse(id, text).map_err(|e| format!("dashboards/{id}.json: {e}"))?);
        }
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut paths: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|e| e == "json"))
                .collect();
            paths.sort();
            for path in paths {
                let id = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .filter(|s| valid_id(s))
                    .ok_or_else(|| {
                        format!(
                            "{}: a dashboard file name is letters, digits, '-' and '_'",
                            path.display()
                        )
                    })?
                    .to_string();
                let size = std::fs::metadata(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .len();
                if size > MAX_FILE {
                    return Err(format!(
                        "{}: {size} bytes, more than {MAX_FILE}",
                        path.display()
                    ));
                }
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let dashboard =
                    parse(&id, &text).map_err(|e| format!("{}: {e}", path.display()))?;
                list.retain(|d: &Dashboard| d.id != id);
                list.push(dashboard);
            }
        }
        list.sort_by(|a, b| a.title.cmp(&b.title));
        Ok(Dashboards { list })
    }

    pub fn all(&self) -> &[Dashboard] {
        &self.list
    }

    pub fn get(&self, id: &str) -> Option<&Dashboard> {
        self.list.iter().find(|d| d.id == id)
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One dashboard file, checked; errors carry the line for JSON mistakes and the panel
/// for the rest.
fn parse(id: &str, text: &str) -> Result<Dashboard, String> {
    let mut dashboard: Dashboard = serde_json::from_str(text)
        .map_err(|e| format!("line {}, column {}: {e}", e.line(), e.column()))?;
    dashboard.id = id.to_string();
    let range = dashboard.time_range.as_str();
    let digits = range.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || !matches!(&range[digits..], "s" | "m" | "h" | "d") {
        return Err(format!(
            "time_range `{range}`: a number and a unit (s, m, h, d), like `24h`"
        ));
    }
    if dashboard.panels.is_empty() || dashboard.panels.len() > MAX_PANELS {
        return Err(format!(
            "a dashboard has 1 to {MAX_PANELS} panels, not {}",
            dashboard.panels.len()
        ));
    }
    for (n, panel) in dashboard.panels.iter().enumerate() {
        check_panel(panel).map_err(|e| format!("panels[{n}] (\"{}\"): {e}", panel.title))?;
    }
    Ok(dashboard)
}

fn check_panel(panel: &Panel) -> Result<(), String> {
    crate::search::query::parse(&panel.query)
        .map_err(|e| format!("query `{}`: {e}", panel.query))?;
    let only = |what: &str, present: bool| {
        if present {
            Err(format!(
                "`{what}` does not apply to a {:?} panel",
                panel.kind
            ))
        } else {
            Ok(())
        }
    };
    match panel.kind {
        PanelKind::Top => {
            let field = panel.field.as_deref().ok_or("a top panel needs `field`")?;
            let size = panel.size.unwrap_or(10);
            if !(1..=100).contains(&size) {
                return Err(format!("size {size}: use 1 to 100"));
            }
            let specs = crate::search::aggs::parse_aggs(&format!("terms:{field}:{size}"))
                .map_err(|e| e.0)?;
            crate::index::aggs::request(&specs, "1h")?;
            only("columns", panel.columns.is_some())
        }
        PanelKind::Table => {
            let size = panel.size.unwrap_or(10);
            if !(1..=100).contains(&size) {
                return Err(format!("size {size}: use 1 to 100"));
            }
            if panel.columns.as_ref().is_some_and(Vec::is_empty) {
                return Err("`columns` is empty".into());
            }
            only("field", panel.field.is_some())
        }
        PanelKind::Timeseries | PanelKind::Number => {
            only("field", panel.field.is_some())?;
            only("size", panel.size.is_some())?;
            only("columns", panel.columns.is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_dashboards_load_and_cover_the_three_promised() {
        let dashboards = Dashboards::load(None).expect("shipped dashboards are valid");
        let ids: Vec<&str> = dashboards.all().iter().map(|d| d.id.as_str()).collect();
        for id in ["authentication-overview", "fleet-health", "shop-security"] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
        for dashboard in dashboards.all() {
            let kinds: std::collections::HashSet<_> =
                dashboard.panels.iter().map(|p| p.kind).collect();
            assert_eq!(kinds.len(), 4, "{} uses every panel type", dashboard.id);
        }
    }

    #[test]
    fn every_shipped_dashboard_file_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("dashboards/")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut shipped: Vec<String> = SHIPPED.iter().map(|(id, _)| (*id).to_string()).collect();
        shipped.sort();
        assert_eq!(on_disk, shipped);
    }

    #[test]
    fn mistakes_are_errors_that_say_where() {
        let cases = [
            (
                r#"{"title": "x", "panels": [], "colour": 1}"#,
                "unknown field `colour`",
            ),
            (r#"{"title": "x", "panels": []}"#, "1 to 24 panels"),
            (
                r#"{"title": "x", "panels": [{"title": "p", "type": "pie"}]}"#,
                "unknown variant `pie`",
            ),
            (
                r#"{"title": "x", "panels": [{"title": "p", "type": "number", "query": "a:(b"}]}"#,
                "panels[0] (\"p\"): query `a:(b`",
            ),
            (
                r#"{"title": "x", "panels": [{"title": "p", "type": "top"}]}"#,
                "a top panel needs `field`",
            ),
            (
                r#"{"title": "x", "panels": [{"title": "p", "type": "top", "field": "message"}]}"#,
                "cannot be bucketed",
            ),
            (
                r#"{"title": "x", "time_range": "soon", "panels": [{"title": "p", "type": "number"}]}"#,
                "time_range",
            ),
            ("{\n  \"title\": 3\n}", "line 2"),
        ];
        for (text, expected) in cases {
            let error = parse("t", text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn a_directory_adds_dashboards_and_replaces_shipped_ones_by_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("fleet-health.json"),
            r#"{"title": "Our fleet", "panels": [{"title": "n", "type": "number"}]}"#,
        )
        .expect("write");
        std::fs::write(
            dir.path().join("dns.json"),
            r#"{"title": "DNS", "panels": [{"title": "n", "type": "number", "query": "event.dataset:dns"}]}"#,
        )
        .expect("write");
        let dashboards = Dashboards::load(Some(dir.path())).expect("load");
        assert_eq!(
            dashboards.get("fleet-health").expect("kept").title,
            "Our fleet"
        );
        assert_eq!(dashboards.get("dns").expect("added").title, "DNS");
        assert_eq!(dashboards.all().len(), 4);
        std::fs::write(dir.path().join("bad name.json"), "{}").expect("write");
        assert!(Dashboards::load(Some(dir.path())).is_err());
    }
}
