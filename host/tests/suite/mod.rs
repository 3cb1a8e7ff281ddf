mod chat;
mod create_agent;
mod docker;
mod proxy;
mod recovery;
mod router;
mod support;
mod tools;
