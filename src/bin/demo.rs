//! Demo (filled in below).

fn main() {}
