//! The simulated Xen host (to be filled in by the simulated-host issue).
