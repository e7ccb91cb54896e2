//! End-to-end tests against the real `vault-server` and `vault-cli` binaries. One test binary
//! (modules below) so it links once.

// A panic is how a test fails.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod access;
mod at_rest;
mod audit;
mod autoseal;
mod backups;
mod cli_flow;
mod clients;
mod cluster;
mod dev_mode;
mod feed;
mod fuzz_grpc;
mod grpc;
mod hardening;
mod http;
mod isolation;
mod keys;
mod kms;
mod limits;
mod logins;
mod operations;
mod reliability;
mod tls;
