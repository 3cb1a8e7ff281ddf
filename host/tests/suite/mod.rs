mod chat;
mod recovery;
mod router;
mod support;
mod tools;
