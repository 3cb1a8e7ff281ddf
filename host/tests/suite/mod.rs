mod chat;
mod docker;
mod proxy;
mod recovery;
mod router;
mod support;
mod tools;
