//! Aggregation requests as analysts write them: `terms:source.ip`, `terms:user.name:20`,
//! `date_histogram:@timestamp` (interval chosen from the data) or
//! `date_histogram:@timestamp:5m`, `cardinality:source.ip`, `min:`/`max:`/`avg:`/
//! `percentiles:http.response.status_code`, and one level of nesting with `>`:
//! `terms:source.ip>date_histogram:@timestamp`. Several are separated by commas.
//!
//! This is the language only; `index::aggs` checks the fields and runs them.

use std::fmt;

/// Most buckets a terms aggregation may ask for.
pub const MAX_TERMS: u32 = 1000;
/// Most aggregations in one request.
pub const MAX_AGGS: usize = 8;

/// What an aggregation computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Terms,
    DateHistogram,
    Cardinality,
    Min,
    Max,
    Avg,
    Percentiles,
}

impl AggKind {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "terms" => AggKind::Terms,
            "date_histogram" => AggKind::DateHistogram,
            "cardinality" => AggKind::Cardinality,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            "avg" => AggKind::Avg,
            "percentiles" => AggKind::Percentiles,
            _ => return None,
        })
    }

    /// Whether it makes buckets (and so may hold a nested aggregation).
    pub fn is_bucket(self) -> bool {
        matches!(self, AggKind::Terms | AggKind::DateHistogram)
    }
}

/// One aggregation, possibly with one nested under each of its buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct AggSpec {
    pub kind: AggKind,
    pub field: String,
    /// Terms: how many buckets (default 10).
    pub size: Option<u32>,
    /// Date histogram: a fixed interval such as `5m` (default: chosen from the data).
    pub interval: Option<String>,
    pub nested: Option<Box<AggSpec>>,
}

/// A request that does not parse: which one and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggError(pub String);

impl fmt::Display for AggError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AggError {}

/// Parses a comma-separated list of aggregation requests.
pub fn parse_aggs(text: &str) -> Result<Vec<AggSpec>, AggError> {
    let specs = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_one)
        .collect::<Result<Vec<_>, _>>()?;
    if specs.len() > MAX_AGGS {
        return Err(AggError(format!(
            "at most {MAX_AGGS} aggregations per request, not {}",
            specs.len()
        )));
    }
    Ok(specs)
}

fn parse_one(text: &str) -> Result<AggSpec, AggError> {
    let levels: Vec<&str> = text.split('>').map(str::trim).collect();
    if levels.len() > 2 {
        return Err(AggError(format!(
            "`{text}`: one level of nesting at most (like terms:source.ip>date_histogram:@timestamp)"
        )));
    }
    let mut spec = parse_level(levels[0])?;
    if let Some(inner) = levels.get(1) {
        if !spec.kind.is_bucket() {
            return Err(AggError(format!(
                "`{text}`: only terms and date_histogram have buckets to nest under"
            )));
        }
        spec.nested = Some(Box::new(parse_level(inner)?));
    }
    Ok(spec)
}

fn parse_level(text: &str) -> Result<AggSpec, AggError> {
    let mut parts = text.splitn(3, ':');
    let kind_name = parts.next().unwrap_or_default();
    let kind = AggKind::parse(kind_name).ok_or_else(|| {
        AggError(format!(
            "`{text}`: unknown aggregation `{kind_name}` (terms, date_histogram, cardinality, min, max, avg, percentiles)"
        ))
    })?;
    let field = parts.next().unwrap_or_default().trim();
    if field.is_empty() {
        return Err(AggError(format!("`{text}`: expected KIND:FIELD")));
    }
    let option = parts.next().map(str::trim);
    let mut spec = AggSpec {
        kind,
        field: field.to_string(),
        size: None,
        interval: None,
        nested: None,
    };
    match (kind, option) {
        (_, None) => {}
        (AggKind::Terms, Some(size)) => {
            let size: u32 = size.parse().map_err(|_| {
                AggError(format!(
                    "`{text}`: the bucket count `{size}` is not a number"
                ))
            })?;
            if size == 0 || size > MAX_TERMS {
                return Err(AggError(format!(
                    "`{text}`: between 1 and {MAX_TERMS} buckets"
                )));
            }
            spec.size = Some(size);
        }
        (AggKind::DateHistogram, Some(interval)) => {
            if super::time::parse_duration(interval).is_none_or(|d| d.num_seconds() < 1) {
                return Err(AggError(format!(
                    "`{text}`: the interval `{interval}` is not a duration of 1s or more (like 30s, 5m, 1h, 1d)"
                )));
            }
            spec.interval = Some(interval.to_string());
        }
        (_, Some(extra)) => {
            return Err(AggError(format!(
                "`{text}`: `{extra}` is not an option of this aggregation"
            )));
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds_options_and_one_level_of_nesting() {
        let specs = parse_aggs(
            "terms:source.ip:20, date_histogram:@timestamp:5m,cardinality:user.name,\
             terms:user.name>date_histogram:@timestamp",
        )
        .expect("valid");
        assert_eq!(specs.len(), 4);
        assert_eq!(specs[0].kind, AggKind::Terms);
        assert_eq!(specs[0].size, Some(20));
        assert_eq!(specs[1].interval.as_deref(), Some("5m"));
        assert_eq!(specs[2].kind, AggKind::Cardinality);
        let nested = specs[3].nested.as_ref().expect("nested");
        assert_eq!(nested.kind, AggKind::DateHistogram);
        assert!(parse_aggs("").expect("empty").is_empty());
    }

    #[test]
    fn says_what_is_wrong() {
        for (text, why) in [
            ("sum:source.port", "unknown aggregation"),
            ("terms", "expected KIND:FIELD"),
            ("terms:user.name:0", "between 1 and"),
            ("terms:user.name:many", "not a number"),
            ("date_histogram:@timestamp:0s", "not a duration"),
            ("cardinality:user.name:5", "not an option"),
            (
                "avg:source.port>terms:user.name",
                "only terms and date_histogram",
            ),
            ("terms:a>terms:b>terms:c", "one level of nesting"),
            (
                "min:a,min:a,min:a,min:a,min:a,min:a,min:a,min:a,min:a",
                "at most 8",
            ),
        ] {
            let error = parse_aggs(text).expect_err(text);
            assert!(error.0.contains(why), "{text}: {error}");
        }
    }
}
