mod consumer;
mod helpers;
mod outbox;
