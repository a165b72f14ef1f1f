//! Just enough ELF reading to tell a static executable from a dynamic one.

use std::path::Path;

/// Whether `path` is a 64-bit ELF without a program interpreter (PT_INTERP), i.e. static.
pub fn is_static(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])) as usize)
    };
    if b.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(size), Some(num)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    const PT_INTERP: u16 = 3;
    (0..num).all(|i| u16_at(phoff + i * size) != Some(PT_INTERP as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic_executables() {
        // This test binary is dynamically linked (it has an interpreter).
        assert!(!is_static(&std::env::current_exe().unwrap()));
        let dir = tempfile::tempdir().unwrap();
        let not_elf = dir.path().join("script");
        std::fs::write(&not_elf, "#!/bin/sh\n").unwrap();
        assert!(!is_static(&not_elf));
        // A 64-bit ELF header with no program headers at all has no interpreter.
        let mut elf = vec![0u8; 64];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        elf[0x20] = 64; // e_phoff
        elf[0x36] = 56; // e_phentsize, e_phnum stays 0
        let bare = dir.path().join("bare");
        std::fs::write(&bare, &elf).unwrap();
        assert!(is_static(&bare));
        // The same with one PT_INTERP program header.
        elf[0x38] = 1;
        elf.extend_from_slice(&[3, 0, 0, 0]);
        elf.resize(64 + 56, 0);
        std::fs::write(&bare, &elf).unwrap();
        assert!(!is_static(&bare));
    }
}
