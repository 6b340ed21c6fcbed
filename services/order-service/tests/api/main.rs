mod breaker;
mod crash;
mod helpers;
mod hostile;
mod idempotency;
mod orders;
mod validation;
