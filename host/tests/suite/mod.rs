mod chat;
mod recovery;
mod support;
mod tools;
