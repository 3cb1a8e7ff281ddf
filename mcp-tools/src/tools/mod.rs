//! One module per group of tools. Each adds its routes to [`crate::Tools`] with
//! `#[tool_router(router = <group>_router)]`, and keeps its behaviour in plain functions over
//! [`crate::server::Context`] that return `Result<String, ToolError>`.

mod bash;
mod files;
mod message;
mod question;
mod search;
mod send_file;
mod skills;
mod tasks;

pub(crate) use bash::Lingering;
#[cfg(test)]
mod races;
