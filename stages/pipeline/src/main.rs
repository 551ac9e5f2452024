fn main() { eprintln!("error: pipeline: not implemented yet"); std::process::exit(1) }
