//! Griffin's eBPF/XDP management/data path split. Empty until the XDP issue
//! lands: nothing here pretends to work yet.
