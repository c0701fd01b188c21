//! The x86-64 instructions the persistence model cares about, recognised
//! from their bytes at translation time: the three cache-line flushes, the
//! two fences that order them, and the non-temporal stores. Everything else
//! is `Other` (its memory accesses are still seen as loads and stores).

/// What one instruction is, for the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Clwb,
    Clflushopt,
    Clflush,
    Sfence,
    Mfence,
    /// A store that bypasses the cache: durable at the next fence, with no
    /// flush (movnti, movntdq, movntps/pd, and their VEX forms).
    NonTemporal,
    Other,
}

impl Kind {
    pub fn is_flush(self) -> bool {
        matches!(self, Kind::Clwb | Kind::Clflushopt | Kind::Clflush)
    }

    pub fn is_fence(self) -> bool {
        matches!(self, Kind::Sfence | Kind::Mfence)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Clwb => "clwb",
            Kind::Clflushopt => "clflushopt",
            Kind::Clflush => "clflush",
            Kind::Sfence => "sfence",
            Kind::Mfence => "mfence",
            Kind::NonTemporal => "movnt",
            Kind::Other => "other",
        }
    }
}

/// Classifies the instruction whose bytes are `insn`.
pub fn classify(insn: &[u8]) -> Kind {
    let mut i = 0;
    let mut opsize = false;
    let mut rep = false;
    // Legacy prefixes, then REX.
    while let Some(&b) = insn.get(i) {
        match b {
            0x66 => opsize = true,
            0xf2 | 0xf3 => rep = true,
            0x2e | 0x3e | 0x26 | 0x64 | 0x65 | 0x36 | 0x67 | 0xf0 => {}
            _ => break,
        }
        i += 1;
    }
    if insn.get(i).is_some_and(|b| b & 0xf0 == 0x40) {
        i += 1;
    }
    match insn.get(i) {
        // VEX: vmovntdq (E7), vmovntps/pd (2B) in map 0F.
        Some(0xc5) => return vex_nt(insn.get(i + 2).copied(), true),
        Some(0xc4) => {
            let map_0f = insn.get(i + 1).is_some_and(|b| b & 0x1f == 1);
            return vex_nt(insn.get(i + 3).copied(), map_0f);
        }
        Some(0x0f) => {}
        _ => return Kind::Other,
    }
    let (Some(&op), modrm) = (insn.get(i + 1), insn.get(i + 2).copied()) else { return Kind::Other };
    match op {
        0xc3 if !opsize && !rep => Kind::NonTemporal,
        0xe7 if opsize => Kind::NonTemporal,
        0x2b if !rep => Kind::NonTemporal,
        0xae => {
            let Some(m) = modrm else { return Kind::Other };
            let (md, reg) = (m >> 6, (m >> 3) & 7);
            match (md == 3, reg, opsize, rep) {
                (false, 7, false, false) => Kind::Clflush,
                (false, 7, true, false) => Kind::Clflushopt,
                (false, 6, true, false) => Kind::Clwb,
                (true, 7, false, false) => Kind::Sfence,
                (true, 6, false, false) => Kind::Mfence,
                _ => Kind::Other,
            }
        }
        _ => Kind::Other,
    }
}

fn vex_nt(opcode: Option<u8>, map_0f: bool) -> Kind {
    match opcode {
        Some(0xe7 | 0x2b) if map_0f => Kind::NonTemporal,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instructions_the_writer_and_libc_use() {
        // clwb [rax], clflushopt [rax], clflush [rax]: rustc's encodings.
        assert_eq!(classify(&[0x66, 0x0f, 0xae, 0x30]), Kind::Clwb);
        assert_eq!(classify(&[0x66, 0x0f, 0xae, 0x38]), Kind::Clflushopt);
        assert_eq!(classify(&[0x0f, 0xae, 0x38]), Kind::Clflush);
        // With a REX prefix (clwb [r8]) and a displacement.
        assert_eq!(classify(&[0x66, 0x41, 0x0f, 0xae, 0x30]), Kind::Clwb);
        assert_eq!(classify(&[0x66, 0x0f, 0xae, 0x70, 0x40]), Kind::Clwb);
        assert_eq!(classify(&[0x0f, 0xae, 0xf8]), Kind::Sfence);
        assert_eq!(classify(&[0x0f, 0xae, 0xf0]), Kind::Mfence);
        // lfence and the register forms of /6 and /7 are not flushes.
        assert_eq!(classify(&[0x0f, 0xae, 0xe8]), Kind::Other);
        // xsaveopt [rax] (0F AE /6, no 66) and fxsave are not flushes.
        assert_eq!(classify(&[0x0f, 0xae, 0x30]), Kind::Other);
        assert_eq!(classify(&[0x0f, 0xae, 0x00]), Kind::Other);
        // movnti [rdi], eax / rax; movntdq [rdi], xmm0; vmovntdq [rdi], ymm0.
        assert_eq!(classify(&[0x0f, 0xc3, 0x07]), Kind::NonTemporal);
        assert_eq!(classify(&[0x48, 0x0f, 0xc3, 0x07]), Kind::NonTemporal);
        assert_eq!(classify(&[0x66, 0x0f, 0xe7, 0x07]), Kind::NonTemporal);
        assert_eq!(classify(&[0xc5, 0xfd, 0xe7, 0x07]), Kind::NonTemporal);
        assert_eq!(classify(&[0xc4, 0xe1, 0x7d, 0xe7, 0x07]), Kind::NonTemporal);
        // mov [rdi], eax; movdqa [rdi], xmm0 (66 0F 7F) stay ordinary.
        assert_eq!(classify(&[0x89, 0x07]), Kind::Other);
        assert_eq!(classify(&[0x66, 0x0f, 0x7f, 0x07]), Kind::Other);
        assert_eq!(classify(&[]), Kind::Other);
        assert_eq!(classify(&[0x66, 0x0f]), Kind::Other);
    }
}
