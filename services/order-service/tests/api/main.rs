mod breaker;
mod crash;
mod fuzz;
mod helpers;
mod hostile;
mod idempotency;
mod orders;
mod validation;
