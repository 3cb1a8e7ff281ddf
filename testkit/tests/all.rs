//! Integration tests for testkit, in one binary (one link step).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
