//! Small MP4 files for the nginx mp4 module's reproducers: one video track
//! of one-second samples, one sample per chunk, with the sample-to-chunk
//! table (`stsc`) given by the caller. Only the boxes nginx reads are
//! written (ftyp, moov/mvhd, trak/tkhd, mdia/mdhd/hdlr, minf/vmhd,
//! stbl/stsd/stts/stsc/stsz/stco, mdat), all version 0, big-endian.

/// Samples in the track (each one second long, `SAMPLE_BYTES` bytes).
const SAMPLES: u32 = 4;
const SAMPLE_BYTES: u32 = 100;
/// Track and movie time units per second.
const TIMESCALE: u32 = 1000;

fn boxed(name: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut b = (8 + payload.len() as u32).to_be_bytes().to_vec();
    b.extend_from_slice(name);
    b.extend_from_slice(payload);
    b
}

/// A "full box": version 0 and no flags before the payload.
fn full(name: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 4];
    p.extend_from_slice(payload);
    boxed(name, &p)
}

fn be(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// The file, with `stsc` entries as (first chunk, samples per chunk,
/// sample description index).
pub fn file(stsc: &[(u32, u32, u32)]) -> Vec<u8> {
    let ftyp = boxed(b"ftyp", b"isom\0\0\x02\0isom");
    // The chunk offsets depend on where mdat starts, which depends on the
    // size of moov: build it once to learn its size, then for real.
    let mdat_data = ftyp.len() + moov(stsc, 0).len() + 8;
    let moov = moov(stsc, mdat_data as u32);
    let mut out = ftyp;
    out.extend(moov);
    out.extend(boxed(
        b"mdat",
        &vec![0u8; (SAMPLES * SAMPLE_BYTES) as usize],
    ));
    out
}

fn moov(stsc: &[(u32, u32, u32)], mdat_data: u32) -> Vec<u8> {
    let duration = SAMPLES * TIMESCALE;
    let mut mvhd = be(&[0, 0, TIMESCALE, duration, 0x10000]);
    mvhd.extend([1, 0]); // volume
    mvhd.extend([0u8; 10 + 36 + 24]); // reserved, matrix, pre-defined
    mvhd.extend(be(&[2])); // next track id
    let mut tkhd = be(&[0, 0, 1, 0, duration]);
    tkhd.extend([0u8; 8 + 8 + 36 + 8]); // reserved, layer..volume, matrix, size
    let mdhd = [be(&[0, 0, TIMESCALE, duration]), vec![0u8; 4]].concat();
    let hdlr = [be(&[0]), b"vide".to_vec(), vec![0u8; 13]].concat();
    let vmhd = full(b"vmhd", &[0u8; 8]);
    let stsd = full(b"stsd", &[be(&[1]), boxed(b"avc1", &[0u8; 8])].concat());
    let stts = full(b"stts", &be(&[1, SAMPLES, TIMESCALE]));
    let mut stsc_words = vec![stsc.len() as u32];
    for (chunk, samples, id) in stsc {
        stsc_words.extend([*chunk, *samples, *id]);
    }
    let stsc = full(b"stsc", &be(&stsc_words));
    let mut stsz_words = vec![0, SAMPLES];
    stsz_words.extend(std::iter::repeat_n(SAMPLE_BYTES, SAMPLES as usize));
    let stsz = full(b"stsz", &be(&stsz_words));
    let mut stco_words = vec![SAMPLES];
    stco_words.extend((0..SAMPLES).map(|i| mdat_data + i * SAMPLE_BYTES));
    let stco = full(b"stco", &be(&stco_words));
    let stbl = boxed(b"stbl", &[stsd, stts, stsc, stsz, stco].concat());
    let minf = boxed(b"minf", &[vmhd, stbl].concat());
    let mdia = boxed(
        b"mdia",
        &[full(b"mdhd", &mdhd), full(b"hdlr", &hdlr), minf].concat(),
    );
    let trak = boxed(b"trak", &[full(b"tkhd", &tkhd), mdia].concat());
    boxed(b"moov", &[full(b"mvhd", &mvhd), trak].concat())
}
