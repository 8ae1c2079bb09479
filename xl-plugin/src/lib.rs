//! libxl's save-helper protocol. Empty until the xl-plugin issue lands.
