//! DNA as FASTA-style lines of `ACGT`. Background bases have a per-document GC content; on top
//! of it sit a fixed set of motifs (promoter boxes, restriction sites, polyadenylation signal),
//! tandem repeats and open reading frames (`ATG`, codons, stop), all of which recur across
//! documents and so can be learnt.

use rand::Rng;

use super::{chance, pick};

/// Real regulatory and restriction-site motifs, so the statistics look like DNA, not noise.
pub const MOTIFS: &[&str] = &[
    "TATAAA",     // TATA box
    "TTGACA",     // bacterial -35 box
    "GAATTC",     // EcoRI
    "GGATCC",     // BamHI
    "CACGTG",     // E-box
    "AATAAA",     // polyadenylation signal
    "GCCGCCATGG", // Kozak consensus
    "CCAAT",      // CAAT box
];
const REPEAT_UNITS: &[&str] = &["CA", "AT", "GGC", "TTA", "AGAT"];
const STOP_CODONS: &[&str] = &["TAA", "TAG", "TGA"];
const BASES: &[u8; 4] = b"ACGT";
const LINE_WIDTH: usize = 60;

pub(super) fn document(rng: &mut impl Rng, target_bytes: usize) -> String {
    // Share of G+C among background bases, in percent.
    let gc = rng.random_range(35..66);
    let target_bases = target_bytes * LINE_WIDTH / (LINE_WIDTH + 1);
    let mut seq: Vec<u8> = Vec::with_capacity(target_bases + 64);
    while seq.len() < target_bases.max(1) {
        match rng.random_range(0..100) {
            0..=4 => seq.extend_from_slice(pick(rng, MOTIFS).as_bytes()),
            5 => {
                let unit = pick(rng, REPEAT_UNITS).as_bytes();
                for _ in 0..rng.random_range(4..10) {
                    seq.extend_from_slice(unit);
                }
            }
            6 => open_reading_frame(rng, &mut seq),
            _ => seq.push(background(rng, gc)),
        }
    }
    let mut out = String::with_capacity(seq.len() + seq.len() / LINE_WIDTH + 1);
    for line in seq.chunks(LINE_WIDTH) {
        // Only ASCII `ACGT` ever enters `seq`.
        out.extend(line.iter().map(|&b| b as char));
        out.push('\n');
    }
    out
}

fn background(rng: &mut impl Rng, gc_percent: u32) -> u8 {
    let strong = chance(rng, gc_percent);
    let base = if strong {
        pick(rng, b"GC")
    } else {
        pick(rng, b"AT")
    };
    debug_assert!(BASES.contains(&base));
    base
}

fn open_reading_frame(rng: &mut impl Rng, seq: &mut Vec<u8>) {
    seq.extend_from_slice(b"ATG");
    for _ in 0..rng.random_range(3..12) {
        loop {
            let codon = [pick(rng, BASES), pick(rng, BASES), pick(rng, BASES)];
            if !STOP_CODONS.iter().any(|s| s.as_bytes() == codon) {
                seq.extend_from_slice(&codon);
                break;
            }
        }
    }
    seq.extend_from_slice(pick(rng, STOP_CODONS).as_bytes());
}
