mod discovery;
mod endpoints;
mod helpers;
mod interop;
mod reservations;
