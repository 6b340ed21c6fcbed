mod crash;
mod helpers;
mod smtp;
