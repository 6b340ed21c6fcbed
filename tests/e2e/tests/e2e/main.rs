mod cluster;
mod failures;
mod flow;
mod helpers;
mod permissions;
mod polyglot;
mod replay;
mod scale;
