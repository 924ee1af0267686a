//! Black-box tests of posthorn against a spawned application, a real PostgreSQL database and real SMTP
//! servers.

mod support;

mod abuse;
mod auth;
mod batch;
mod bounces;
mod changes;
mod cli;
mod compose_property;
mod crash;
mod delivery;
mod dkim;
mod durability;
mod embedded;
mod events;
mod faults;
mod hardening;
mod idempotency;
mod inbound;
mod interop;
mod messages;
mod ops;
mod providers;
mod rate_limit;
mod replicas;
mod resend;
mod retention;
mod send;
mod store;
mod submission;
mod suppressions;
mod templates;
mod upgrade;
mod upgrade_outcomes;
mod webhooks;
