//! GitHub at the edge: the payload types the operator reads.

pub mod payload;
