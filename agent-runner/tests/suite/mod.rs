//! Test modules of the agent-runner integration binary.

mod activity;
mod harness;
mod lifecycle;
mod tools;
mod turns;
