mod failures;
mod flow;
mod helpers;
mod polyglot;
mod scale;
