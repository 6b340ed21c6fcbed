mod breaker;
mod crash;
mod helpers;
mod idempotency;
mod orders;
mod validation;
