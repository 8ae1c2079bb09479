//! `rxmigrate-save-helper`: see the library documentation and README.md.

fn main() {
    std::process::exit(rxmigrate_xl_plugin::run(std::env::args_os().collect()));
}
