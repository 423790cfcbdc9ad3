//! `Decompressor::decompress_into` on arbitrary payloads (algorithm and limit from the first
//! 2 bytes, see `netron_fuzz::decompress_params`): no panic, output never above the limit
//! (decompression bomb guard), exactly the declared size on success, nothing appended on
//! failure, and a decompressor that saw garbage still decompresses a good payload. Then the
//! rest is compressed with `Compressor` and must decompress to itself.
#![no_main]

use std::cell::RefCell;
use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use netron_codec::CompressionError;
use netron_codec::compress::{Compression, Compressor, Decompressor, SIZE_PREFIX};
use netron_fuzz::{DECOMPRESS_PREFIX, decompress_params};

const SENTINEL: &[u8] = b"prefix kept";

thread_local! {
    // Reused across inputs like a connection's (de)compressors, keyed by (algo, max).
    static STATE: RefCell<Vec<((Compression, u32), Decompressor)>> = const { RefCell::new(Vec::new()) };
}

fn with_decompressor<R>(algo: Compression, max: u32, f: impl FnOnce(&mut Decompressor) -> R) -> R {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let i = match s.iter().position(|(k, _)| *k == (algo, max)) {
            Some(i) => i,
            None => {
                s.push(((algo, max), Decompressor::new(algo, max)));
                s.len() - 1
            }
        };
        f(&mut s[i].1)
    })
}

fn good_plain() -> Vec<u8> {
    b"netron netron netron netron netron netron netron netron!".repeat(2)
}

fn good_payload(algo: Compression) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(Compressor::new(algo, 0).compress_into(&good_plain(), &mut out));
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((prefix, payload)) = data.split_first_chunk::<DECOMPRESS_PREFIX>() else {
        return;
    };
    let (algo, max) = decompress_params(*prefix);
    let mut out = SENTINEL.to_vec();
    let r = with_decompressor(algo, max, |d| {
        let declared = d.declared_size(payload);
        let r = d.decompress_into(payload, &mut out);
        if algo != Compression::None {
            if let (Ok(n), Ok(())) = (&declared, &r) {
                assert_eq!(out.len() - SENTINEL.len(), *n);
            }
            if let Err(e) = &declared {
                assert_eq!(r.as_ref().err(), Some(e));
            }
        }
        r
    });
    assert!(out.starts_with(SENTINEL));
    let got = out.len() - SENTINEL.len();
    assert!(
        got <= max as usize,
        "decompressed {got} bytes with a limit of {max}"
    );
    match r {
        Ok(()) => {
            let declared = u32::from_le_bytes(payload[..SIZE_PREFIX].try_into().unwrap());
            assert_eq!(got, declared as usize);
        }
        Err(e) => {
            assert_eq!(got, 0, "a failed decompression appends nothing");
            black_box(e.counter());
            match e {
                CompressionError::Unsupported(a) => assert_eq!(a, algo),
                CompressionError::TooLarge { declared, max: m } => {
                    assert!(declared > m as u64);
                    assert_eq!(m, max);
                }
                CompressionError::Corrupt => {}
                _ => {}
            }
        }
    }
    // The reused decompressor is not poisoned by garbage.
    if algo != Compression::None && max >= 1024 {
        let good = good_payload(algo);
        let mut plain = Vec::new();
        with_decompressor(algo, max, |d| d.decompress_into(&good, &mut plain))
            .expect("a good payload decompresses after garbage");
        assert_eq!(plain, good_plain());
    }
    // Compression round trip of the payload bytes themselves.
    if algo != Compression::None {
        let mut c = Compressor::new(algo, 0);
        let mut compressed = vec![0xAA];
        if c.compress_into(payload, &mut compressed) {
            assert!(
                compressed.len() - 1 < payload.len(),
                "compression must shrink"
            );
            let mut d = Decompressor::new(algo, payload.len() as u32);
            let mut plain = Vec::new();
            d.decompress_into(&compressed[1..], &mut plain)
                .expect("own output decompresses");
            assert_eq!(plain, payload);
            if !payload.is_empty() {
                let mut small = Decompressor::new(algo, payload.len() as u32 - 1);
                let mut none = Vec::new();
                assert!(matches!(
                    small.decompress_into(&compressed[1..], &mut none),
                    Err(CompressionError::TooLarge { .. })
                ));
                assert!(none.is_empty());
            }
        } else {
            assert_eq!(compressed, [0xAA], "nothing appended when not compressing");
        }
    }
});
