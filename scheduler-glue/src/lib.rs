//! Griffin's node scores and HTTP endpoint for schedulers. Empty until the
//! daemon/score issue lands: nothing here pretends to work yet.
