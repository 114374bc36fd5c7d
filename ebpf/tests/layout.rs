//! The Rust mirror types must have exactly the C structs' layout: sizes and
//! field offsets are read from the BTF clang emitted into the object.

use std::{collections::BTreeMap, mem::offset_of};

use griffin_ebpf::{
    types::{
        GriffinBank, GriffinBitmap, GriffinConfig, GriffinCounter, GriffinLpmV4Key,
        GriffinLpmV6Key, GriffinLpmValue, GriffinRule, GriffinVerdict,
    },
    OBJECT,
};
use object::{Object, ObjectSection};

/// A struct as BTF describes it: size and (field name, byte offset).
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    size: usize,
    fields: Vec<(String, usize)>,
}

const BTF_KIND_STRUCT: u32 = 4;

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

fn string_at(strings: &[u8], offset: u32) -> String {
    let start = offset as usize;
    let end = strings[start..].iter().position(|&b| b == 0).unwrap() + start;
    String::from_utf8(strings[start..end].to_vec()).unwrap()
}

/// Walks the type section of raw BTF (linux/btf.h), collecting every struct.
fn btf_structs(btf: &[u8]) -> BTreeMap<String, Layout> {
    assert_eq!(u16::from_le_bytes([btf[0], btf[1]]), 0xeb9f, "BTF magic");
    let hdr_len = u32_at(btf, 4) as usize;
    let (type_off, type_len) = (u32_at(btf, 8) as usize, u32_at(btf, 12) as usize);
    let (str_off, str_len) = (u32_at(btf, 16) as usize, u32_at(btf, 20) as usize);
    let types = &btf[hdr_len + type_off..hdr_len + type_off + type_len];
    let strings = &btf[hdr_len + str_off..hdr_len + str_off + str_len];

    let mut structs = BTreeMap::new();
    let mut at = 0;
    while at < types.len() {
        let name_off = u32_at(types, at);
        let info = u32_at(types, at + 4);
        let size = u32_at(types, at + 8) as usize;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31 == 1;
        at += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
            3 => 12,                      // ARRAY
            4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
            6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
            2 | 7..=12 | 16 | 18 => 0,
            other => panic!("unknown BTF kind {other}"),
        };
        if kind == BTF_KIND_STRUCT && name_off != 0 {
            let fields = (0..vlen)
                .map(|i| {
                    let member = at + 12 * i;
                    let bits = u32_at(types, member + 8);
                    // With kind_flag the top 8 bits are a bitfield size.
                    let bit_offset = if kind_flag { bits & 0x00ff_ffff } else { bits };
                    assert_eq!(bit_offset % 8, 0, "bitfield in a shared struct");
                    (
                        string_at(strings, u32_at(types, member)),
                        (bit_offset / 8) as usize,
                    )
                })
                .collect();
            structs.insert(string_at(strings, name_off), Layout { size, fields });
        }
        at += extra;
    }
    structs
}

fn object_structs() -> BTreeMap<String, Layout> {
    let elf = object::File::parse(OBJECT).expect("the embedded object is ELF");
    let btf = elf
        .section_by_name(".BTF")
        .expect("the object keeps its .BTF section (clang -g)");
    btf_structs(btf.data().unwrap())
}

macro_rules! layout {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        Layout {
            size: size_of::<$ty>(),
            fields: vec![$((stringify!($field).to_owned(), offset_of!($ty, $field))),*],
        }
    };
}

#[test]
fn rust_mirrors_match_the_c_structs() {
    let c = object_structs();
    let rust = [
        (
            "griffin_counter",
            layout!(GriffinCounter { packets, bytes }),
        ),
        (
            "griffin_rule",
            layout!(GriffinRule {
                id,
                match_flags,
                vlan,
                ip_proto,
                dscp,
                dport_lo,
                dport_hi,
                src_set,
                dst_set,
                action,
                pad0,
                target,
            }),
        ),
        (
            "griffin_config",
            layout!(GriffinConfig {
                rule_count,
                attach_mode,
                ifindex,
                generation,
                retired,
                lock,
                pad0,
            }),
        ),
        (
            "griffin_lpm_v4_key",
            layout!(GriffinLpmV4Key { prefixlen, addr }),
        ),
        (
            "griffin_lpm_v6_key",
            layout!(GriffinLpmV6Key { prefixlen, addr }),
        ),
        ("griffin_lpm_value", layout!(GriffinLpmValue { sets })),
        (
            "griffin_bank",
            layout!(GriffinBank {
                match_union,
                rule_count,
                index,
                pad0,
                src_used,
                dst_used,
                src_any_class,
                dst_any_class,
                src_set_class,
                dst_set_class,
                pad1,
                vlan_class,
                proto_class,
                dscp_class,
                dport_class,
                nonzero,
                verdicts,
                first_by_bit,
                bitmaps,
            }),
        ),
        ("griffin_bitmap", layout!(GriffinBitmap { words })),
        (
            "griffin_verdict",
            layout!(GriffinVerdict {
                id,
                target,
                action,
                pad0
            }),
        ),
    ];
    for (name, layout) in &rust {
        let c_layout = c
            .get(*name)
            .unwrap_or_else(|| panic!("struct {name} missing from the object's BTF"));
        assert_eq!(
            &layout, &c_layout,
            "struct {name}: Rust mirror differs from C"
        );
    }
    // Every shared struct (from griffin_xdp.h) has a mirror.
    let mirrored: Vec<&str> = rust.iter().map(|(name, _)| *name).collect();
    for name in c.keys().filter(|name| name.starts_with("griffin_")) {
        let private = [
            "griffin_pkt",
            "griffin_walk",
            "griffin_vlan_hdr",
            "griffin_ext_hdr",
            "griffin_frag_hdr",
        ];
        assert!(
            mirrored.contains(&name.as_str()) || private.contains(&name.as_str()),
            "C struct {name} has no Rust mirror"
        );
    }
}

#[test]
fn btf_parser_reads_known_kernel_structs() {
    // The parser itself, checked against a struct whose layout is fixed by ABI.
    let c = object_structs();
    let md = &c["xdp_md"];
    assert_eq!(md.size, 24);
    assert_eq!(md.fields[0], ("data".to_owned(), 0));
    assert_eq!(md.fields[4], ("rx_queue_index".to_owned(), 16));
}
