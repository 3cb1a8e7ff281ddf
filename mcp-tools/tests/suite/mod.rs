mod bash;
mod confinement;
mod files;
mod harness;
mod messaging;
mod server;
