//! Serving HTTP under limits, for every port spangate opens (OTLP gRPC and HTTP,
//! OFREP, probes): a connection limit per listener fitted to the open-files limit,
//! deadlines for a request's headers and body and for an idle connection, HTTP/2
//! stream limits, and a shutdown that ends in time whatever clients do
//! ([`serve`]). Also what admitting a request takes: a memory budget shared by the
//! requests in flight ([`MemoryBudget`]) and bearer tokens ([`Tokens`]).

mod body;
mod budget;
mod events;
mod files;
mod server;
mod tokens;

pub use body::{BodyTimedOut, body_timed_out};
pub use budget::{MemoryBudget, Reservation};
pub use server::{ListenerStats, Protocols, ServerLimits, ServerStats, serve};
pub use tokens::{Admission, Tokens};
