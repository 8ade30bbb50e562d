//! moto's server, shared with the benches: see `testkit/src/moto.rs`.

pub use testkit::moto::*;
