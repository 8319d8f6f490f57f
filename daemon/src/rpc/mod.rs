//! The daemon's servers, the only modules that speak tarpc to the outside: the operator
//! socket (`operator.rs`, serving the `Fleet` service of `fleet/`), one gateway socket per
//! agent (`gateway.rs`, serving the `Gateway` service, and beside it the same agent's
//! local HTTP API, `local_api.rs`, with its provider and connection calls,
//! `upstream_api.rs`; the egress proxy, `egress.rs`, and its TLS inspection,
//! `tls_inspect.rs`), and the connection limits they share (`conn.rs`). They call the runtime and the domain modules; nothing calls them
//! but `lib.rs`.

pub mod conn;
pub mod egress;
pub mod fleet;
pub mod gateway;
pub mod local_api;
pub mod memory_api;
pub mod operator;
mod runs_api;
pub mod swarm_gateway;
pub mod tls_inspect;
pub mod upstream_api;

pub use fleet::FleetService;
pub use operator::serve;
