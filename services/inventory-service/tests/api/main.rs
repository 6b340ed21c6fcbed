mod batches;
mod discovery;
mod endpoints;
mod helpers;
mod reservations;
mod sweeper;
mod timers;
