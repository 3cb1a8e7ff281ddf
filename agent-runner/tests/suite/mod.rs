//! Test modules of the agent-runner integration binary.

mod activity;
mod context;
mod drafts;
mod events;
mod harness;
mod lifecycle;
mod model_socket;
mod real_model;
mod servers;
mod skills;
mod steer;
mod tasks;
mod tools;
mod turns;
mod user_servers;
