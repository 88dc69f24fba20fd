//! The shop's entities and rules. Every value that comes from a request is parsed into
//! one of these types at the edge, so a `Sku`, a `Quantity` or an `Email` in the rest of
//! the code is valid by construction.

pub mod audit;
pub mod cart;
pub mod form;
pub mod password;
pub mod ports;
pub mod user;
