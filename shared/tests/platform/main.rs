mod consumer;
mod fuzz;
mod helpers;
mod outbox;
mod streams;
