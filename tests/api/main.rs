//! Black-box tests of the HTTP API against a spawned application and a real PostgreSQL database.

mod support;

mod auth;
mod cli;
mod durability;
mod idempotency;
mod messages;
mod ops;
mod send;
