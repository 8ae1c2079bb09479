//! `rxmigrate verify` on hostile bytes of any layer (xl save file, libxl
//! stream, bare libxc stream): an error or a verdict, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let _ = rxmigrate::inspect::verify(&mut input, true, &mut std::io::sink());
    let mut input = data;
    let _ = rxmigrate::inspect::inspect(&mut input, false, &mut std::io::sink());
});
