mod consumer;
mod fuzz;
mod helpers;
mod micro;
mod migrations;
mod outbox;
mod streams;
