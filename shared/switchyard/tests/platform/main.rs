mod consumer;
mod domain_free;
mod fuzz;
mod helpers;
mod micro;
mod migrations;
mod outbox;
mod streams;
