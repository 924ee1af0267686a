//! posthorn: a transactional email HTTP gateway.
//!
//! Layers, from the edge inwards: [`api`] (HTTP only) parses requests into [`domain`] types, which the
//! [`store`] writes durably; [`delivery`] workers claim stored jobs and hand them to SMTP upstreams.

pub mod accept;
pub mod api;
pub mod app;
pub mod auth;
pub mod bounces;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod delivery;
pub mod domain;
pub mod forms;
pub mod metrics;
pub mod queue_history;
pub mod rate_limit;
pub mod retention;
pub mod secret;
pub mod store;
pub mod submission;
pub mod telemetry;
pub mod webhooks;
