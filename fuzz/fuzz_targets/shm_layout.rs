//! `SegmentLayout::from_words` on segment headers a peer wrote: a valid header for two
//! capacities with words overwritten, and a mapped length that may differ.
//!
//! No panic. An accepted layout states the mapped length, has power-of-two capacities in
//! range, every region (header, control blocks, data areas) aligned, inside the mapping and
//! apart from the others, and writes back the same words.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netron_fuzz::ShmLayoutInput;
use netron_shm::layout::{
    CTRL_LEN, HEADER_LEN, HEADER_WORDS, MAX_CAPACITY, MIN_CAPACITY, REGION_ALIGN, SegmentLayout,
};

fuzz_target!(|input: ShmLayoutInput| {
    let cap = |code: u8| 64usize << (code % 25);
    let good =
        SegmentLayout::new(cap(input.to_server), cap(input.to_client)).expect("valid capacities");
    let mut w: [u64; HEADER_WORDS] = good.to_words();
    for &(i, v) in &input.writes {
        w[i as usize % HEADER_WORDS] = v;
    }
    let mapped = good.len.wrapping_add_signed(input.len_delta as isize);
    let Ok(l) = SegmentLayout::from_words(&w, mapped) else {
        return;
    };
    assert_eq!(l.len, mapped);
    assert_eq!(
        l.to_words(),
        w,
        "an accepted header must describe exactly this layout"
    );
    let mut regions = vec![(0usize, HEADER_LEN)];
    for r in &l.rings {
        assert!(r.capacity.is_power_of_two());
        assert!((MIN_CAPACITY..=MAX_CAPACITY).contains(&r.capacity));
        assert_eq!(r.ctrl % REGION_ALIGN, 0);
        assert_eq!(r.data % REGION_ALIGN, 0);
        regions.push((r.ctrl, CTRL_LEN));
        regions.push((r.data, r.capacity));
    }
    for (i, &(a, alen)) in regions.iter().enumerate() {
        assert!(a + alen <= mapped, "region outside the mapping");
        for &(b, blen) in &regions[i + 1..] {
            assert!(a + alen <= b || b + blen <= a, "overlapping regions");
        }
    }
});
