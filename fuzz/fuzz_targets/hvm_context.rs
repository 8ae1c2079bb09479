//! The HVM context blob parser (HVM_CONTEXT records): refuse, never panic;
//! what it accepts rebuilds to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rxmigrate::stream::hvm_context;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = hvm_context::parse(data) {
        let _ = hvm_context::check_header(&entries);
        let again = hvm_context::build(&entries);
        assert_eq!(hvm_context::parse(&again).ok(), Some(entries));
    }
});
