mod workloads;
fn main() {}
