mod consumer;
mod fuzz;
mod helpers;
mod migrations;
mod outbox;
mod streams;
