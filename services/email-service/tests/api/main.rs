mod batches;
mod crash;
mod helpers;
mod smtp;
