//! GitHub at the edge: the payload types the operator reads and the REST client.

pub mod client;
pub mod payload;
