//! `alerting`: the command line. It parses arguments and calls the library.

fn main() {}
