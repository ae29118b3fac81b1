//! Integration tests of apex-backend: a real server on 127.0.0.1:0, real HTTP and WebSocket
//! clients. One test binary for the crate keeps link time down.

mod agents;
mod auth;
mod bad_input;
mod contracts;
mod delivery;
mod golden_path;
mod isolation;
mod isolation_props;
mod limits;
mod operations;
mod outage;
mod services;
mod support;
