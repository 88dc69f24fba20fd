//! Search as analysts write it: the query language ([`query`]), independent of the index
//! engine. `index::compile` turns a parsed query into the engine's query.

pub mod aggs;
pub mod export;
pub mod query;
pub mod time;
