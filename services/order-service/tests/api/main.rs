mod breaker;
mod helpers;
mod idempotency;
mod orders;
mod validation;
