//! Property tests (fuzzing) for the sysfs text parsers: arbitrary input never
//! panics, and what the kernel's formats can express round-trips.

use griffin_devices::parse;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(griffin_tests::fuzz_cases(2000)))]

    #[test]
    fn parsers_never_panic_on_arbitrary_text(s in ".{0,64}") {
        let _ = parse::cpulist(&s);
        let _ = parse::cpumask(&s);
        let _ = parse::hex_u32(&s);
        let _ = parse::dec_u32(&s);
        let _ = parse::optional_id(&s);
        let _ = parse::distance_row(&s);
        let _ = parse::uevent(&s);
        let _ = parse::size_bytes(&s);
        let _ = parse::meminfo(&s);
        let _ = parse::pci_address(&s);
        let _ = parse::device_path(&s);
        let _ = parse::link_speed(&s);
        let _ = parse::link_basename(&s);
    }

    #[test]
    fn parsers_never_panic_on_sysfs_like_text(s in "[0-9a-fx,:/.\\- \n]{0,40}") {
        let _ = parse::cpulist(&s);
        let _ = parse::cpumask(&s);
        let _ = parse::pci_address(&s);
        let _ = parse::device_path(&s);
        let _ = parse::size_bytes(&s);
    }

    #[test]
    fn cpulist_roundtrips(ids in proptest::collection::btree_set(0u32..4096, 0..200)) {
        let list = parse::CpuList::from_ids(ids.iter().copied());
        let text = list.to_string();
        let back = parse::cpulist(&text).unwrap();
        let want: Vec<u32> = ids.iter().copied().collect();
        prop_assert_eq!(back.as_slice(), want.as_slice());
    }

    #[test]
    fn cpumask_matches_cpulist(ids in proptest::collection::btree_set(0u32..256, 0..64)) {
        // Build the kernel's mask text: 32-bit words, most significant first.
        let mut words = [0u32; 8];
        for &i in &ids {
            words[(i / 32) as usize] |= 1 << (i % 32);
        }
        let text = words.iter().rev().map(|w| format!("{w:08x}")).collect::<Vec<_>>().join(",");
        let from_mask = parse::cpumask(&text).unwrap();
        let want: Vec<u32> = ids.iter().copied().collect();
        prop_assert_eq!(from_mask.as_slice(), want.as_slice());
    }

    #[test]
    fn pci_address_roundtrips(d in 0u32..0x10000, b: u8, dev in 0u8..32, f in 0u8..8) {
        let text = format!("{d:04x}:{b:02x}:{dev:02x}.{f}");
        let a = parse::pci_address(&text).unwrap();
        prop_assert_eq!(a.to_string(), text);
    }
}
