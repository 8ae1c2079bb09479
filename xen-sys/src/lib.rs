//! Bindings to Xen's C libraries. Empty until the Xen backend lands: nothing here
//! pretends to talk to Xen yet.
