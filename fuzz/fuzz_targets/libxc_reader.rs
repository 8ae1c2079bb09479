//! The libxc stream reader on hostile bytes: it may refuse them, never panic,
//! never read past the END record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rxmigrate::stream::LibxcReader;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let Ok(mut r) = LibxcReader::new(&mut input) else {
        return;
    };
    let mut ended = false;
    loop {
        match r.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => {
                ended = true;
                break;
            }
            Err(_) => break,
        }
    }
    let consumed = r.offset();
    drop(r);
    assert!(consumed as usize <= data.len());
    if ended {
        // Nothing after END was taken from the input.
        assert_eq!(input.len(), data.len() - consumed as usize);
    }
});
